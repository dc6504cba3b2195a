//! `GET /fill?name=N&kib=K&via=V`: writes `K` KiB to `/scratch/N`, through
//! one `wasi:filesystem` write path, and says how far it got. The host's
//! scratch quota must stop each path with an error, never a trap.
//!
//! `via`: `write` (`descriptor.write`, 64 KiB at a time), `stream`
//! (`write-via-stream` and `blocking-write-and-flush`, 4 KiB at a time),
//! `append` (`append-via-stream`), `size` (`set-size` to `K` KiB at once),
//! `std` (`std::fs::write`, whatever path Rust's std takes), `files` (`K`
//! empty files in a new folder `N`).

use wasip2::filesystem::preopens::get_directories;
use wasip2::filesystem::types::{Descriptor, DescriptorFlags, OpenFlags, PathFlags};
use wasip2::io::streams::{OutputStream, StreamError};

/// `wrote {n} bytes`, or `error after {n} bytes: {why}`.
pub fn fill(name: &str, kib: &str, via: &str) -> String {
    let Ok(kib) = kib.parse::<u64>() else {
        return "error: kib must be a number".into();
    };
    let total = kib * 1024;
    if via == "std" {
        let bytes = vec![b'x'; usize::try_from(total).unwrap_or(0)];
        return match std::fs::write(format!("/scratch/{name}"), bytes) {
            Ok(()) => format!("wrote {total} bytes"),
            Err(e) => format!("error after 0 bytes: {e}"),
        };
    }
    let Some((dir, _)) = get_directories().into_iter().find(|(_, p)| p == "/scratch") else {
        return "error: no /scratch".into();
    };
    if via == "files" {
        if let Err(e) = dir.create_directory_at(name) {
            return format!("error after 0 bytes: {e:?}");
        }
        for i in 0..kib {
            let created = dir.open_at(
                PathFlags::empty(),
                &format!("{name}/{i}"),
                OpenFlags::CREATE,
                DescriptorFlags::WRITE,
            );
            if let Err(e) = created {
                return format!("error after {i} files: {e:?}");
            }
        }
        return format!("wrote {kib} files");
    }
    let file = match dir.open_at(
        PathFlags::empty(),
        name,
        OpenFlags::CREATE,
        DescriptorFlags::WRITE,
    ) {
        Ok(file) => file,
        Err(e) => return format!("error after 0 bytes: {e:?}"),
    };
    let written = match via {
        "write" => by_write(&file, total),
        "stream" => file
            .write_via_stream(0)
            .map_err(|e| (0, format!("{e:?}")))
            .and_then(|s| by_stream(&s, total)),
        "append" => file
            .append_via_stream()
            .map_err(|e| (0, format!("{e:?}")))
            .and_then(|s| by_stream(&s, total)),
        "size" => file
            .set_size(total)
            .map(|()| total)
            .map_err(|e| (0, format!("{e:?}"))),
        _ => return "error: via must be write, stream, append, size, std or files".into(),
    };
    match written {
        Ok(n) => format!("wrote {n} bytes"),
        Err((n, why)) => format!("error after {n} bytes: {why}"),
    }
}

fn by_write(file: &Descriptor, total: u64) -> Result<u64, (u64, String)> {
    let chunk = vec![b'x'; 64 * 1024];
    let mut done = 0;
    while done < total {
        let n = (total - done).min(64 * 1024);
        let part = &chunk[..usize::try_from(n).unwrap_or(0)];
        done += file
            .write(part, done)
            .map_err(|e| (done, format!("{e:?}")))?;
    }
    Ok(done)
}

fn by_stream(stream: &OutputStream, total: u64) -> Result<u64, (u64, String)> {
    let chunk = [b'x'; 4096];
    let mut done = 0;
    while done < total {
        let n = (total - done).min(4096);
        match stream.blocking_write_and_flush(&chunk[..usize::try_from(n).unwrap_or(0)]) {
            Ok(()) => done += n,
            Err(StreamError::LastOperationFailed(e)) => {
                let code = wasip2::filesystem::types::filesystem_error_code(&e);
                return Err((done, format!("{code:?}")));
            }
            Err(StreamError::Closed) => return Err((done, "closed".into())),
        }
    }
    Ok(done)
}
