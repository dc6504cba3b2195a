//! The queue interface through wasmtime's real lifting path: a hand-written
//! component calls `send` with what a hostile guest can pass (lengths past
//! every limit, in UTF-8, UTF-16 and Latin-1, and bytes that are not text)
//! and gets error values, never traps; and nothing is read before the rate
//! limiter admits the call.

use super::add_to_linker;
use crate::grants::Grants;
use crate::guest_log::GuestTags;
use crate::rate_limit::{BucketConfig, Interface, RateLimits};
use crate::role_version::RoleVersion;
use crate::sandbox::GuestState;
use crate::{CpuScheduler, CpuShare, RoleSpec, SandboxLimits};
use std::sync::Arc;
use wasmtime::component::{Component, Linker, TypedFunc};
use wasmtime::{Config, Engine, Store};
use weft_broker::{MemoryBroker, QueueBroker};

/// A guest that imports `send` three times over, lowered with each string
/// encoding the component model has, and exports
/// `run(encoding, name-ptr, name-len, body-len, dedupe-len) -> code`: it
/// sends the string at `name-ptr` (`name-len` in the encoding's units) as
/// the queue name, `body-len` zero bytes as the body and, unless
/// `dedupe-len` is 0, that many zero bytes as the dedupe id; the code is
/// 100 for `ok`, else the error case's index (0 rate-limited, 1 too-large,
/// 2 denied, 3 not-found, 4 unavailable, 5 invalid). Its memory holds
/// "jobs" in Latin-1/UTF-8 at `JOBS` and in UTF-16 at `JOBS16`, two bytes
/// that are not UTF-8 at `NOT_UTF8`, an unpaired UTF-16 surrogate at
/// `LONE_SURROGATE`, and 200 Latin-1 `é` at `E_ACUTES` (400 bytes of UTF-8:
/// within the name limit as the guest passes it, over it once decoded).
const GUEST: &str = r#"
(component
  (import "weft:vmbus/queue@0.1.0" (instance $queue
    (type $opts' (record
      (field "initial-invisibility-ms" u32)
      (field "time-to-live-ms" u32)
      (field "dedupe-id" (option string))))
    (export "send-options" (type $opts (eq $opts')))
    (type $error' (variant
      (case "rate-limited")
      (case "too-large" string)
      (case "denied" string)
      (case "not-found" string)
      (case "unavailable" string)
      (case "invalid" string)))
    (export "error" (type $error (eq $error')))
    (type $result (result string (error $error)))
    (type $send (func (param "queue" string) (param "body" (list u8))
      (param "options" $opts) (result $result)))
    (export "send" (func (type $send)))))

  (core module $libc
    (memory (export "memory") 40)
    (global $next (mut i32) (i32.const 2097152))
    (func (export "realloc") (param i32 i32) (param $align i32) (param $size i32) (result i32)
      (local $at i32)
      (local.set $at
        (i32.and
          (i32.add (global.get $next) (i32.sub (local.get $align) (i32.const 1)))
          (i32.sub (i32.const 0) (local.get $align))))
      (global.set $next (i32.add (local.get $at) (local.get $size)))
      (local.get $at))
    (data (i32.const 2400000) "jobs")
    (data (i32.const 2400016) "j\00o\00b\00s\00")
    (data (i32.const 2400032) "\ff\fe")
    (data (i32.const 2400048) "\00\d8\00\00")
    (data (i32.const 2400064) "E_ACUTES"))
  (core instance $libc (instantiate $libc))
  (alias core export $libc "memory" (core memory $memory))
  (alias core export $libc "realloc" (core func $realloc))
  (alias export $queue "send" (func $send))
  (core func $send-utf8 (canon lower (func $send) (memory $memory) (realloc $realloc)))
  (core func $send-utf16
    (canon lower (func $send) (memory $memory) (realloc $realloc) string-encoding=utf16))
  (core func $send-latin1
    (canon lower (func $send) (memory $memory) (realloc $realloc) string-encoding=latin1+utf16))

  (core module $main
    (import "libc" "memory" (memory 1))
    (type $send (func (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32)))
    (import "queue" "utf8" (func $utf8 (type $send)))
    (import "queue" "utf16" (func $utf16 (type $send)))
    (import "queue" "latin1" (func $latin1 (type $send)))
    (func (export "run")
      (param $encoding i32) (param $ptr i32) (param $len i32) (param $body i32)
      (param $dedupe i32) (result i32)
      (local.get $ptr) (local.get $len)
      (i32.const 0) (local.get $body)
      (i32.const 0) (i32.const 0)
      (i32.ne (local.get $dedupe) (i32.const 0)) (i32.const 0) (local.get $dedupe)
      (i32.const 2300000)
      (local.get $encoding)
      (call_indirect (type $send))
      ;; The result: its case at 2300000, an error's case at 2300004.
      (if (result i32) (i32.eqz (i32.load8_u (i32.const 2300000)))
        (then (i32.const 100))
        (else (i32.load8_u (i32.const 2300004)))))
    (table 3 funcref)
    (elem (i32.const 0) func $utf8 $utf16 $latin1))
  (core instance $main (instantiate $main
    (with "libc" (instance $libc))
    (with "queue" (instance
      (export "utf8" (func $send-utf8))
      (export "utf16" (func $send-utf16))
      (export "latin1" (func $send-latin1))))))

  (func (export "run")
    (param "encoding" u32) (param "name-ptr" u32) (param "name-len" u32)
    (param "body-len" u32) (param "dedupe-len" u32) (result u32)
    (canon lift (core func $main "run"))))
"#;

const UTF8: u32 = 0;
const UTF16: u32 = 1;
const LATIN1: u32 = 2;
/// Marks a `latin1+utf16` string's length as UTF-16 code units.
const UTF16_TAG: u32 = 1 << 31;
const JOBS: u32 = 2_400_000;
const JOBS16: u32 = 2_400_016;
const NOT_UTF8: u32 = 2_400_032;
const LONE_SURROGATE: u32 = 2_400_048;
const E_ACUTES: u32 = 2_400_064;
/// A million units of zeros at address 0: a string far past every limit.
const HUGE: u32 = 1_000_000;

const OK: u32 = 100;
const RATE_LIMITED: u32 = 0;
const TOO_LARGE: u32 = 1;
const DENIED: u32 = 2;
const INVALID: u32 = 5;

type Run = TypedFunc<(u32, u32, u32, u32, u32), (u32,)>;

struct Guest {
    store: Store<GuestState>,
    run: Run,
    broker: Arc<MemoryBroker>,
    version: Arc<RoleVersion>,
}

impl Guest {
    async fn new(rate_limits: RateLimits) -> Self {
        let mut config = Config::new();
        config.wasm_component_model(true);
        let engine = Engine::new(&config).unwrap();
        let mut linker = Linker::new(&engine);
        add_to_linker(&mut linker).unwrap();
        let guest = GUEST.replace("E_ACUTES", &"\\e9".repeat(200));
        let component = Component::new(&engine, guest).unwrap();
        let broker = Arc::new(MemoryBroker::default());
        let spec = RoleSpec {
            grants: Grants {
                service: "svc".into(),
                role: "web".into(),
                queues: ["jobs".to_owned()].into(),
                ..Grants::default()
            },
            limits: SandboxLimits::default(),
            rate_limits,
            cpu: CpuShare::default(),
            queues: broker.clone(),
            kv: broker.clone(),
        };
        let version = Arc::new(RoleVersion::new(
            spec,
            "web",
            &CpuScheduler::new(1, false, 0),
            std::num::NonZeroU64::MIN,
            None,
        ));
        let tags = Arc::new(GuestTags {
            service: "svc".into(),
            role: "web".into(),
            instance: "0".into(),
        });
        let state = GuestState::new(&version, tags, version.vmbus(), 0).unwrap();
        let mut store = Store::new(&engine, state);
        let instance = linker
            .instantiate_async(&mut store, &component)
            .await
            .unwrap();
        let run = instance.get_typed_func(&mut store, "run").unwrap();
        Self {
            store,
            run,
            broker,
            version,
        }
    }

    /// Sends as the guest; a trap fails the test.
    async fn send(&mut self, encoding: u32, name: (u32, u32), body: u32, dedupe: u32) -> u32 {
        let args = (encoding, name.0, name.1, body, dedupe);
        match self.run.call_async(&mut self.store, args).await {
            Ok((code,)) => code,
            Err(trap) => panic!("send{args:?} trapped: {trap:?}"),
        }
    }

    fn admitted(&self) -> (u64, u64) {
        let stats = self.version.limiter.stats();
        let queue = stats
            .iter()
            .find(|s| s.interface == Interface::Queue)
            .unwrap();
        (queue.admitted, queue.limited)
    }
}

#[tokio::test]
async fn hostile_strings_through_the_real_lift_get_errors_not_traps() {
    let mut guest = Guest::new(RateLimits::default()).await;
    // The granted name arrives whole in every encoding.
    assert_eq!(guest.send(UTF8, (JOBS, 4), 1, 0).await, OK);
    assert_eq!(guest.send(UTF16, (JOBS16, 4), 1, 0).await, OK);
    assert_eq!(guest.send(LATIN1, (JOBS, 4), 1, 0).await, OK);
    assert_eq!(guest.send(LATIN1, (JOBS16, 4 | UTF16_TAG), 1, 0).await, OK);
    assert_eq!(guest.broker.len("svc/jobs").await.unwrap(), 4);

    // Names far past the limit, in each encoding (2 MB of UTF-16, and the
    // tagged Latin-1/UTF-16 form), are denied unread and unadmitted.
    let before = guest.admitted();
    for (encoding, len) in [(UTF8, HUGE), (UTF16, HUGE), (LATIN1, HUGE | UTF16_TAG)] {
        assert_eq!(guest.send(encoding, (0, len), 1, 0).await, DENIED);
    }
    assert_eq!(guest.admitted(), before, "refused before the rate limiter");
    // 200 Latin-1 bytes that are 400 of UTF-8: caught after the (bounded)
    // transcoding.
    assert_eq!(guest.send(LATIN1, (E_ACUTES, 200), 1, 0).await, DENIED);
    // Bodies and dedupe ids past their limits, checked from their lengths.
    assert_eq!(
        guest.send(UTF8, (JOBS, 4), 64 * 1024 + 1, 0).await,
        TOO_LARGE
    );
    assert_eq!(guest.send(UTF8, (JOBS, 4), 1, HUGE).await, INVALID);
    assert_eq!(guest.send(UTF8, (JOBS, 4), 1, 129).await, INVALID);
    // Not text.
    assert_eq!(guest.send(UTF8, (NOT_UTF8, 2), 1, 0).await, INVALID);
    // An unpaired surrogate is not text either.
    assert_eq!(guest.send(UTF16, (LONE_SURROGATE, 2), 1, 0).await, INVALID);
    // Within every limit, but not granted.
    assert_eq!(guest.send(UTF8, (0, 256), 1, 0).await, DENIED);
    assert_eq!(guest.broker.len("svc/jobs").await.unwrap(), 4);
}

#[tokio::test]
async fn a_call_is_admitted_before_its_strings_are_read() {
    // One queue call per minute, and no waiting for the next.
    let mut rate_limits = RateLimits::default();
    rate_limits[Interface::Queue].ops = Some(BucketConfig {
        size: 1,
        refill_ms: 60_000,
        burst: 0,
    });
    rate_limits.max_wait_ms = 0;
    let mut guest = Guest::new(rate_limits).await;
    assert_eq!(guest.send(UTF8, (JOBS, 4), 1, 0).await, OK);
    // Bytes that are not text: refused by the limiter before anything
    // decodes them (else this would be `invalid`).
    assert_eq!(guest.send(UTF8, (NOT_UTF8, 2), 1, 0).await, RATE_LIMITED);
    assert_eq!(guest.admitted(), (1, 1));
}
