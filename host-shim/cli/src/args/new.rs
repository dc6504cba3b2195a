//! `weft new`'s arguments: a template, the folder to make from it, and where
//! Weft's source root is; or `--list`.

use clap::{ArgGroup, Args};
use std::path::PathBuf;

/// Either `--list` or a [`NewService`]: the group makes clap require one of
/// them, so `service` is `None` only with `--list`.
#[derive(Args)]
#[command(group(ArgGroup::new("what").required(true).args(["list", "template"])))]
pub struct NewArgs {
    #[command(flatten)]
    pub service: Option<NewService>,
    /// List the templates, one a line, with what each makes.
    #[arg(long, conflicts_with_all = ["template", "folder"])]
    pub list: bool,
    /// Weft's source root (holding wit/ and sdk/), which the new service's
    /// build reads [default: $WEFT_DIR, else the source tree this weft was
    /// built from].
    #[arg(long, value_name = "DIR")]
    pub weft_dir: Option<PathBuf>,
}

/// The service to make.
#[derive(Args)]
pub struct NewService {
    /// The template to start from (`weft new --list` shows them).
    pub template: String,
    /// The folder to make, relative to the current one; its last part is
    /// the service's name (`.`: the current folder, named after it). It
    /// must not exist, or be empty.
    #[arg(value_name = "NAME")]
    pub folder: PathBuf,
}
