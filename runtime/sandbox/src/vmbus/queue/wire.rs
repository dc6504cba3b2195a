//! Reading a queue call's arguments out of guest memory: names, receipts,
//! bodies and dedupe ids arrive as [`GuestStr`] and [`WasmList`] views, and
//! each length is checked before anything is decoded or copied, so a guest
//! naming a gigabyte-long queue or body costs the host nothing.
//!
//! Strings need a type of their own. wasmtime's [`WasmStr`] keeps its
//! length private and offers only `to_str`, which validates (UTF-8) or
//! transcodes (UTF-16, Latin-1) the whole string before anyone can compare
//! its length with a limit: a guest could make every call cost the host a
//! pass over (or a copy of) its whole memory. [`GuestStr`] lifts exactly as
//! `WasmStr` does (bounds, alignment and hostcall fuel are checked by
//! wasmtime), and keeps the length the guest passed.
//!
//! To do so it implements `ComponentType` and `Lift` with the types of
//! `wasmtime::component::__internal`, which wasmtime does not keep stable.
//! So the workspace pins wasmtime to one exact version, and the lift tests
//! (`lift_tests.rs`, a hand-written component passing hostile strings in
//! every encoding through wasmtime's real lifting path) are the canary for
//! each upgrade. Taking a plain `String` (public API, bounded by the
//! hostcall fuel) was weighed and refused: wasmtime would validate or
//! transcode up to the hostcall fuel (4 MiB) of it before the
//! length check and the rate limiter, on every call, and a string that is
//! not text would trap the guest instead of returning `invalid`.

use super::MAX_DELAY_MS;
use crate::rate_limit::byte_count;
use crate::vmbus::bindings::weft::vmbus::types::Error as WitError;
use std::time::Duration;
use wasmtime::AsContext;
use wasmtime::component::__internal::wasmtime_environ::component::StringEncoding;
use wasmtime::component::__internal::{CanonicalAbiInfo, InstanceType, InterfaceType, LiftContext};
use wasmtime::component::{ComponentType, Lift, WasmList, WasmStr};
use weft_broker::{MAX_DEDUPE_ID_BYTES, MAX_MESSAGE_BYTES, SendOptions};

/// The longest queue name read from a guest: longer than any name a
/// manifest can grant, so a longer one is refused unread.
pub(super) const MAX_NAME_BYTES: usize = 256;
/// The longest receipt read from a guest (every backend's are far shorter).
pub(super) const MAX_RECEIPT_BYTES: usize = 256;
/// The canonical ABI's mark on the length of a `latin1+utf16` string that
/// is in UTF-16 (the rest of the length counts code units).
const UTF16_TAG: usize = 1 << 31;

/// A string argument, still in guest memory, with its length.
pub(crate) struct GuestStr {
    text: WasmStr,
    /// Its length in the guest's encoding: bytes (UTF-8, Latin-1) or UTF-16
    /// code units. Each becomes at least one byte of UTF-8, so this is a
    /// lower bound of the decoded length: a string whose `units` pass a
    /// limit is over it, and refused without being read.
    units: usize,
}

impl GuestStr {
    /// At least how many bytes the string has in UTF-8.
    pub(super) fn min_bytes(&self) -> usize {
        self.units
    }

    /// The string's length in the guest's encoding, from the raw length the
    /// guest passed.
    fn units(cx: &LiftContext<'_>, raw_len: u32) -> wasmtime::Result<usize> {
        let len = usize::try_from(raw_len)?;
        Ok(match cx.options().string_encoding {
            StringEncoding::Utf8 | StringEncoding::Utf16 => len,
            StringEncoding::CompactUtf16 => len & !UTF16_TAG,
        })
    }
}

// SAFETY: `GuestStr` is lowered, laid out and type-checked exactly as the
// `WasmStr` it wraps (a `string`): every item delegates to `WasmStr`'s.
#[allow(unsafe_code)]
unsafe impl ComponentType for GuestStr {
    type Lower = <WasmStr as ComponentType>::Lower;

    const ABI: CanonicalAbiInfo = <WasmStr as ComponentType>::ABI;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <WasmStr as ComponentType>::typecheck(ty, types)
    }
}

// SAFETY: lifting is `WasmStr`'s own (which checks the pointer and length
// against the guest's memory); the length is then read again from the same
// values, whose layout (a 32-bit pointer, then a 32-bit length) is the
// canonical ABI's for a string in a 32-bit memory, the only kind wasmtime
// lifts strings from.
#[allow(unsafe_code)]
unsafe impl Lift for GuestStr {
    fn linear_lift_from_flat(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        src: &Self::Lower,
    ) -> wasmtime::Result<Self> {
        let text = WasmStr::linear_lift_from_flat(cx, ty, src)?;
        let units = Self::units(cx, src[1].get_u32())?;
        Ok(Self { text, units })
    }

    fn linear_lift_from_memory(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        bytes: &[u8],
    ) -> wasmtime::Result<Self> {
        let text = WasmStr::linear_lift_from_memory(cx, ty, bytes)?;
        let len = bytes
            .get(4..8)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .ok_or_else(|| wasmtime::format_err!("a string's length is missing"))?;
        let units = Self::units(cx, u32::from_le_bytes(len))?;
        Ok(Self { text, units })
    }
}

/// `send-options` as it crosses the VMBus, its dedupe id still in guest memory.
#[derive(ComponentType, Lift)]
#[component(record)]
pub(super) struct WireSendOptions {
    #[component(name = "initial-invisibility-ms")]
    initial_invisibility_ms: u32,
    #[component(name = "time-to-live-ms")]
    time_to_live_ms: u32,
    #[component(name = "dedupe-id")]
    dedupe_id: Option<GuestStr>,
}

/// A guest string that was too long to read, or not text.
#[derive(Debug)]
pub(super) enum BadStr {
    /// Longer than allowed.
    TooLong,
    /// Not valid text in its encoding.
    NotText,
}

/// Reads a guest string of at most `max` bytes of UTF-8. One whose length
/// is already over `max` is refused unread; any other is short enough that
/// decoding it costs next to nothing.
fn read_str(
    store: impl AsContext<Data: 'static>,
    s: &GuestStr,
    max: usize,
) -> Result<String, BadStr> {
    if s.min_bytes() > max {
        return Err(BadStr::TooLong);
    }
    let text = s.text.to_str(&store).map_err(|_| BadStr::NotText)?;
    // Transcoded from UTF-16 or Latin-1 it may have grown past `max`.
    if text.len() > max {
        return Err(BadStr::TooLong);
    }
    Ok(text.into_owned())
}

/// Checks a queue name's length, unread: one too long to be granted is
/// denied.
pub(super) fn check_queue(role: &str, name: &GuestStr) -> Result<(), WitError> {
    if name.min_bytes() > MAX_NAME_BYTES {
        return Err(too_long_name(role));
    }
    Ok(())
}

fn too_long_name(role: &str) -> WitError {
    WitError::Denied(format!(
        "a queue name over {MAX_NAME_BYTES} bytes is not granted to role '{role}'"
    ))
}

/// Reads a queue name (after [`check_queue`]); what went wrong, if
/// anything, becomes the guest's error with [`bad_queue_name`].
pub(super) fn read_queue(
    store: impl AsContext<Data: 'static>,
    name: &GuestStr,
) -> Result<String, BadStr> {
    read_str(&store, name, MAX_NAME_BYTES)
}

/// The error for a queue name that could not be read: one too long to be
/// granted is denied (the error names `role`).
pub(super) fn bad_queue_name(bad: BadStr, role: &str) -> WitError {
    match bad {
        BadStr::TooLong => too_long_name(role),
        BadStr::NotText => WitError::Invalid("queue name is not valid text".into()),
    }
}

/// Reads a receipt; one longer than any backend issues is unknown.
pub(super) fn read_receipt(
    store: impl AsContext<Data: 'static>,
    receipt: &GuestStr,
) -> Result<String, WitError> {
    read_str(store, receipt, MAX_RECEIPT_BYTES)
        .map_err(|_| WitError::NotFound("no current delivery has this receipt".into()))
}

/// Checks a send's lengths, reading nothing, and returns the bytes it
/// carries (body and dedupe id), for the rate limiter.
pub(super) fn check_send(body: &WasmList<u8>, options: &WireSendOptions) -> Result<u64, WitError> {
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(WitError::TooLarge(format!(
            "message body is {} bytes; the limit is {MAX_MESSAGE_BYTES}",
            body.len()
        )));
    }
    let dedupe = options.dedupe_id.as_ref().map_or(0, GuestStr::min_bytes);
    if dedupe > MAX_DEDUPE_ID_BYTES {
        return Err(bad_dedupe_id());
    }
    Ok(byte_count(body.len() + dedupe))
}

fn bad_dedupe_id() -> WitError {
    WitError::Invalid(format!(
        "dedupe-id must be 1 to {MAX_DEDUPE_ID_BYTES} bytes of UTF-8"
    ))
}

/// Reads a send's arguments (after [`check_send`]).
pub(super) fn read_send(
    store: impl AsContext<Data: 'static>,
    body: &WasmList<u8>,
    options: &WireSendOptions,
) -> Result<(Vec<u8>, SendOptions), WitError> {
    check_send(body, options)?;
    let dedupe_id = match &options.dedupe_id {
        None => None,
        Some(id) => match read_str(&store, id, MAX_DEDUPE_ID_BYTES) {
            Ok(id) if !id.is_empty() => Some(id),
            _ => return Err(bad_dedupe_id()),
        },
    };
    let options = send_options(
        options.initial_invisibility_ms,
        options.time_to_live_ms,
        dedupe_id,
    )?;
    Ok((body.as_le_slice(&store).to_vec(), options))
}

/// Checks a send's numbers: the initial invisibility at most
/// [`MAX_DELAY_MS`]; a time to live of 0 means none.
pub(super) fn send_options(
    delay_ms: u32,
    ttl_ms: u32,
    dedupe_id: Option<String>,
) -> Result<SendOptions, WitError> {
    if delay_ms > MAX_DELAY_MS {
        return Err(WitError::Invalid(format!(
            "initial invisibility of {delay_ms} ms is over the maximum of {MAX_DELAY_MS} ms"
        )));
    }
    Ok(SendOptions {
        delay: Duration::from_millis(u64::from(delay_ms)),
        ttl: (ttl_ms > 0).then(|| Duration::from_millis(u64::from(ttl_ms))),
        dedupe_id,
        trace_parent: None,
    })
}
