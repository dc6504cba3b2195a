//! Bindings generated from `wit/` for the VMBus imports (world
//! `weft:vmbus/imports`), and the host's type behind the one resource a
//! guest holds through them, [`BucketHandle`].
//!
//! A leaf: the interface modules use these, and these use nothing of theirs.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "weft:vmbus/imports",
    imports: { default: async | trappable },
    with: {
        "wasi:keyvalue/store.bucket": BucketHandle,
    },
});

/// An open `wasi:keyvalue` bucket: the backend's (service-scoped) name.
#[derive(Debug)]
pub struct BucketHandle {
    pub(crate) scoped_name: String,
}
