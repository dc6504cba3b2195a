//! The `queue` and `bucket` commands' arguments: what an operator does to a
//! running service's data (its queues and buckets) on a host.

use super::ClientArgs;
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Args)]
pub struct QueueCommandArgs {
    #[command(subcommand)]
    pub command: QueueCommand,
}

/// What an operator does to a running service's queue.
#[derive(Subcommand)]
pub enum QueueCommand {
    /// Send a message: TEXT, or the bytes of --file; prints its id.
    Send(QueueSendArgs),
    /// Show the next visible messages without receiving them (a poison
    /// queue, NAME-poison, shows why each was poisoned).
    Peek(QueuePeekArgs),
    /// Delete every message of the queue (visible, delayed or leased).
    Purge(QueuePurgeArgs),
    /// Move messages from the queue's poison queue back to it: those with
    /// the given ids, or all.
    Redrive(QueueRedriveArgs),
}

/// A running service's queue, on a host.
#[derive(Args)]
pub struct QueueTarget {
    /// The service.
    pub service: String,
    /// The queue, as the manifest names it (NAME-poison: its poison queue).
    pub queue: String,
}

#[derive(Args)]
pub struct QueueSendArgs {
    #[command(flatten)]
    pub target: QueueTarget,
    /// The message, as text.
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    pub text: Option<String>,
    /// Send this file's bytes instead (at most 64 KiB).
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Keep the message invisible this long first, in milliseconds (at most 7 days).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(0..=604_800_000))]
    pub delay_ms: Option<u64>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args)]
pub struct QueuePeekArgs {
    #[command(flatten)]
    pub target: QueueTarget,
    /// At most this many messages (1 to 32).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=32))]
    pub max: u32,
    /// Print the API's JSON instead of a line per message.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args)]
pub struct QueuePurgeArgs {
    #[command(flatten)]
    pub target: QueueTarget,
    /// Yes, delete every message (refused without it).
    #[arg(long)]
    pub yes: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args)]
pub struct QueueRedriveArgs {
    #[command(flatten)]
    pub target: QueueTarget,
    /// Move only this poison message (repeatable); without it, all.
    #[arg(long = "id", value_name = "ID")]
    pub ids: Vec<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args)]
pub struct BucketCommandArgs {
    #[command(subcommand)]
    pub command: BucketCommand,
}

/// What an operator does to a running service's bucket.
#[derive(Subcommand)]
pub enum BucketCommand {
    /// List every key, one a line.
    Keys(BucketKeysArgs),
    /// Write one key's value to stdout, as its bytes.
    Get(BucketGetArgs),
    /// Delete these keys; prints how many existed.
    Delete(BucketDeleteArgs),
    /// Delete every key of the bucket.
    Purge(BucketPurgeArgs),
}

/// A running service's bucket, on a host.
#[derive(Args)]
pub struct BucketTarget {
    /// The service.
    pub service: String,
    /// The bucket, as the manifest names it.
    pub bucket: String,
}

#[derive(Args)]
pub struct BucketKeysArgs {
    #[command(flatten)]
    pub target: BucketTarget,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args)]
pub struct BucketGetArgs {
    #[command(flatten)]
    pub target: BucketTarget,
    /// The key.
    pub key: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args)]
pub struct BucketDeleteArgs {
    #[command(flatten)]
    pub target: BucketTarget,
    /// The keys (at most 1000).
    #[arg(required = true, num_args = 1..=1000)]
    pub keys: Vec<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args)]
pub struct BucketPurgeArgs {
    #[command(flatten)]
    pub target: BucketTarget,
    /// Yes, delete every key (refused without it).
    #[arg(long)]
    pub yes: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}
