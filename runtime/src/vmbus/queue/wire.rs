//! Reading a queue call's arguments out of guest memory: names, receipts,
//! bodies and dedupe ids arrive as [`WasmStr`] and [`WasmList`] views, and
//! each length is checked before anything is copied, so a guest naming a
//! gigabyte-long queue or body costs the host nothing.

use super::{MAX_DELAY_MS, echo};
use crate::broker::{MAX_DEDUPE_ID_BYTES, MAX_MESSAGE_BYTES, SendOptions};
use crate::sandbox::GuestState;
use crate::vmbus::bindings::weft::vmbus::types::Error as WitError;
use std::time::Duration;
use wasmtime::AsContext;
use wasmtime::component::{ComponentType, Lift, WasmList, WasmStr};

/// The longest queue name read from a guest: longer than any name a
/// manifest can grant, so a longer one is refused unread.
const MAX_NAME_BYTES: usize = 256;
/// The longest receipt read from a guest (every backend's are far shorter).
const MAX_RECEIPT_BYTES: usize = 256;

/// `send-options` as it crosses the VMBus, its dedupe id still in guest memory.
#[derive(ComponentType, Lift)]
#[component(record)]
pub(super) struct WireSendOptions {
    #[component(name = "initial-invisibility-ms")]
    initial_invisibility_ms: u32,
    #[component(name = "time-to-live-ms")]
    time_to_live_ms: u32,
    #[component(name = "dedupe-id")]
    dedupe_id: Option<WasmStr>,
}

/// A guest string that was too long to read, or not text.
enum BadStr {
    /// Longer than allowed; its first characters (see `echo`), for an error.
    TooLong(String),
    NotUtf8,
}

/// Reads a guest string of at most `max` bytes. UTF-8 strings are checked in
/// place, so an oversized one is never copied.
fn read_str(
    store: impl AsContext<Data = GuestState>,
    s: &WasmStr,
    max: usize,
) -> Result<String, BadStr> {
    let text = s.to_str(&store).map_err(|_| BadStr::NotUtf8)?;
    if text.len() > max {
        return Err(BadStr::TooLong(echo(&text).to_owned()));
    }
    Ok(text.into_owned())
}

/// Reads a queue name; one too long to be granted is denied unread.
pub(super) fn read_queue(
    store: impl AsContext<Data = GuestState>,
    name: &WasmStr,
) -> Result<String, WitError> {
    match read_str(&store, name, MAX_NAME_BYTES) {
        Ok(name) => Ok(name),
        Err(BadStr::TooLong(start)) => Err(WitError::Denied(format!(
            "queue '{start}…' is not granted to role '{}'",
            store.as_context().data().vmbus.grants.role
        ))),
        Err(BadStr::NotUtf8) => Err(WitError::Invalid("queue name is not UTF-8".into())),
    }
}

/// Reads a receipt; one longer than any backend issues is unknown.
pub(super) fn read_receipt(
    store: impl AsContext<Data = GuestState>,
    receipt: &WasmStr,
) -> Result<String, WitError> {
    read_str(store, receipt, MAX_RECEIPT_BYTES)
        .map_err(|_| WitError::NotFound("no current delivery has this receipt".into()))
}

/// Reads a send's arguments, checking the body's and dedupe id's lengths
/// before copying them.
pub(super) fn read_send(
    store: impl AsContext<Data = GuestState>,
    body: &WasmList<u8>,
    options: &WireSendOptions,
) -> Result<(Vec<u8>, SendOptions), WitError> {
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(WitError::TooLarge(format!(
            "message body is {} bytes; the limit is {MAX_MESSAGE_BYTES}",
            body.len()
        )));
    }
    let dedupe_id = match &options.dedupe_id {
        None => None,
        Some(id) => match read_str(&store, id, MAX_DEDUPE_ID_BYTES) {
            Ok(id) if !id.is_empty() => Some(id),
            _ => {
                return Err(WitError::Invalid(format!(
                    "dedupe-id must be 1 to {MAX_DEDUPE_ID_BYTES} bytes of UTF-8"
                )));
            }
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
    })
}
