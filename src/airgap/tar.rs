//! Streaming tar for bundles: a writer that sends blobs from the store straight into a file, a pipe
//! or a socket, and a reader that hands an archive's entries over as they arrive, so neither side
//! ever holds more than a chunk of a blob.
//!
//! Headers are encoded and decoded by the `tar` crate (ustar, with a pax `size` record and a GNU
//! base-256 size field for entries of 8 GiB and more); the streaming around them is here, because
//! the crate's archive types are synchronous. The reader also understands what other tools write:
//! pax `path`/`size` records, GNU long names, `./` prefixes and directory entries. It refuses
//! absolute paths and `..`, checks every header's checksum, and reports an archive that stops
//! early (inside an entry, or without the end-of-archive blocks) as truncated.

use std::io;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

/// A tar block.
pub const BLOCK: u64 = 512;

/// The end-of-archive marker: two zero blocks.
pub const END: u64 = 2 * BLOCK;

/// The largest size the 11 octal digits of a ustar header hold (8 GiB - 1).
const USTAR_MAX: u64 = 0o777_7777_7777;

use crate::limits::MAX_TAR_EXTENSION as MAX_EXTENSION;

/// `size` rounded up to whole blocks; `None` when that does not fit a `u64` (a size within a block
/// of 2^64, which a header can claim: base-256 sizes and pax records go that far).
pub fn padded(size: u64) -> Option<u64> {
    size.div_ceil(BLOCK).checked_mul(BLOCK)
}

/// The bytes a file entry of `size` bytes takes in an archive written by [`Writer`]: its header(s)
/// and its padded data; `None` when that does not fit a `u64`.
pub fn entry_len(size: u64) -> Option<u64> {
    let header = if size > USTAR_MAX {
        // A pax record of a u64 is under 40 bytes: one block.
        3 * BLOCK
    } else {
        BLOCK
    };
    padded(size)?.checked_add(header)
}

/// The error for a size whose padding does not fit a `u64`.
fn too_large(size: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("a tar entry of {size} bytes is too large"),
    )
}

/// The pax record `"<len> size=<size>\n"`, whose length counts its own digits.
fn pax_size_record(size: u64) -> String {
    let body = format!(" size={size}\n");
    let mut len = body.len() + 1;
    while len.to_string().len() + body.len() != len {
        len = len.to_string().len() + body.len();
    }
    format!("{len}{body}")
}

/// Writes an archive entry by entry.
pub struct Writer<W> {
    out: W,
    written: u64,
}

/// What kind of entry the [`Reader`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// Anything else (a link, a device, ...): its type flag.
    Other(u8),
}

/// An entry of an archive being read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The path, normalised: no `./`, no leading or trailing `/`.
    pub path: String,
    /// The data's size.
    pub size: u64,
    /// The kind.
    pub kind: Kind,
}

/// Why an archive cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum TarError {
    /// The archive stops early.
    #[error("the archive is truncated: {0}")]
    Truncated(String),
    /// A header is not a tar header, or names a path wharf refuses.
    #[error("{0}")]
    Format(String),
    /// Reading failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads an archive entry by entry; the data of each entry is read in chunks before asking for
/// the next (what is left unread is skipped).
pub struct Reader<R> {
    inner: BufReader<R>,
    /// The current entry, its size and the bytes of its data read so far.
    current: Option<(String, u64, u64)>,
    /// The last entry's path, for messages.
    last: Option<String>,
    finished: bool,
}

// === impl Writer ===

impl<W: AsyncWrite + Unpin> Writer<W> {
    /// A writer at the start of an archive.
    pub fn new(out: W) -> Self {
        Self { out, written: 0 }
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    async fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes).await?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Writes a directory entry (`path` without the trailing `/`).
    ///
    /// # Errors
    /// When the path does not fit a ustar header, or writing fails.
    pub async fn dir(&mut self, path: &str, mtime: u64) -> io::Result<()> {
        let h = header(&format!("{path}/"), 0, mtime, ::tar::EntryType::Directory)?;
        self.put(h.as_bytes()).await
    }

    /// Writes the header of a file of `size` bytes; its data follows with [`Writer::data`] and
    /// [`Writer::pad`].
    ///
    /// # Errors
    /// When the path does not fit a ustar header, or writing fails.
    pub async fn file(&mut self, path: &str, size: u64, mtime: u64) -> io::Result<()> {
        if size > USTAR_MAX {
            let record = pax_size_record(size);
            let pax = header(
                &format!("PaxHeaders/{path}"),
                record.len() as u64,
                mtime,
                ::tar::EntryType::XHeader,
            )?;
            self.put(pax.as_bytes()).await?;
            self.put(record.as_bytes()).await?;
            self.pad(record.len() as u64).await?;
        }
        let h = header(path, size, mtime, ::tar::EntryType::Regular)?;
        self.put(h.as_bytes()).await
    }

    /// Writes file data.
    ///
    /// # Errors
    /// When writing fails.
    pub async fn data(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.put(bytes).await
    }

    /// Pads a file of `size` bytes to a whole block.
    ///
    /// # Errors
    /// When writing fails.
    pub async fn pad(&mut self, size: u64) -> io::Result<()> {
        let zeros = [0u8; BLOCK as usize];
        let padded = padded(size).ok_or_else(|| too_large(size))?;
        // Less than a block, so the cast is exact.
        let n = (padded - size) as usize;
        self.put(&zeros[..n]).await
    }

    /// Writes a whole small file.
    ///
    /// # Errors
    /// As [`Writer::file`].
    pub async fn small_file(&mut self, path: &str, bytes: &[u8], mtime: u64) -> io::Result<()> {
        self.file(path, bytes.len() as u64, mtime).await?;
        self.data(bytes).await?;
        self.pad(bytes.len() as u64).await
    }

    /// Writes the end-of-archive marker and flushes; returns the output.
    ///
    /// # Errors
    /// When writing fails.
    pub async fn finish(mut self) -> io::Result<W> {
        self.put(&[0u8; END as usize]).await?;
        self.out.flush().await?;
        Ok(self.out)
    }
}

fn header(path: &str, size: u64, mtime: u64, kind: ::tar::EntryType) -> io::Result<::tar::Header> {
    if path.len() > 100 {
        return Err(io::Error::other(format!("tar path too long: {path}")));
    }
    let mut h = ::tar::Header::new_ustar();
    // set_path would drop a directory's trailing '/': write the name field directly.
    let name = &mut h.as_old_mut().name;
    name.fill(0);
    name[..path.len()].copy_from_slice(path.as_bytes());
    h.set_size(size);
    h.set_mode(if kind == ::tar::EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    h.set_entry_type(kind);
    h.set_cksum();
    Ok(h)
}

// === impl Reader ===

impl<R: AsyncRead + Unpin> Reader<R> {
    /// A reader at the start of an archive.
    pub fn new(inner: R) -> Self {
        Self {
            inner: BufReader::with_capacity(256 * 1024, inner),
            current: None,
            last: None,
            finished: false,
        }
    }

    fn after(&self) -> String {
        match &self.last {
            Some(p) => format!("after {p}"),
            None => "at its start".into(),
        }
    }

    /// Reads a block; `Ok(None)` at the very end of the input.
    async fn block(&mut self) -> Result<Option<[u8; BLOCK as usize]>, TarError> {
        let mut buf = [0u8; BLOCK as usize];
        let mut got = 0;
        while got < buf.len() {
            let n = self.inner.read(&mut buf[got..]).await?;
            if n == 0 {
                if got == 0 {
                    return Ok(None);
                }
                return Err(TarError::Truncated(format!(
                    "a header {} is cut short",
                    self.after()
                )));
            }
            got += n;
        }
        Ok(Some(buf))
    }

    /// Skips what is left of the current entry's data and its padding.
    async fn skip_rest(&mut self) -> Result<(), TarError> {
        let Some((path, size, read)) = self.current.take() else {
            return Ok(());
        };
        // Sizes were checked to pad without overflow when the entry was read.
        let end = padded(size).unwrap_or(u64::MAX);
        let mut left = end.saturating_sub(read);
        let mut scratch = vec![0u8; 64 * 1024];
        while left > 0 {
            let want = usize::try_from(left.min(scratch.len() as u64)).unwrap_or(scratch.len());
            let n = self.inner.read(&mut scratch[..want]).await?;
            if n == 0 {
                let at = end - left;
                return Err(TarError::Truncated(if at < size {
                    format!("{path} ends after {at} of {size} bytes")
                } else {
                    format!("{path} is not padded to a whole block")
                }));
            }
            left -= n as u64;
        }
        Ok(())
    }

    /// Reads a whole extension entry (pax or GNU long name) of `size` bytes.
    async fn extension(&mut self, size: u64) -> Result<Vec<u8>, TarError> {
        if size > MAX_EXTENSION {
            return Err(TarError::Format(format!(
                "an extended header {} is {size} bytes, more than wharf reads",
                self.after()
            )));
        }
        // At most MAX_EXTENSION, so the padding fits.
        let mut data = vec![0u8; usize::try_from(padded(size).unwrap_or(0)).unwrap_or(0)];
        self.inner.read_exact(&mut data).await.map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                TarError::Truncated(format!("an extended header {} is cut short", self.after()))
            } else {
                TarError::Io(e)
            }
        })?;
        data.truncate(usize::try_from(size).unwrap_or(0));
        Ok(data)
    }

    /// The next entry, or `None` after the end-of-archive marker.
    ///
    /// # Errors
    /// A truncated archive, a header that is not tar, a path that is absolute or has `..`.
    pub async fn next(&mut self) -> Result<Option<Entry>, TarError> {
        if self.finished {
            return Ok(None);
        }
        self.skip_rest().await?;
        let mut long_path: Option<String> = None;
        let mut pax_path: Option<String> = None;
        let mut pax_size: Option<u64> = None;
        loop {
            let Some(block) = self.block().await? else {
                return Err(TarError::Truncated(format!(
                    "it ends {} without the end-of-archive marker",
                    self.after()
                )));
            };
            if block.iter().all(|b| *b == 0) {
                // One zero block then the end of the input is accepted as well as two.
                match self.block().await? {
                    None => {
                        self.finished = true;
                        return Ok(None);
                    }
                    Some(next) if next.iter().all(|b| *b == 0) => {
                        self.finished = true;
                        return Ok(None);
                    }
                    Some(_) => {
                        return Err(TarError::Format(format!(
                            "a lone zero block {} is followed by more data",
                            self.after()
                        )))
                    }
                }
            }
            let header = ::tar::Header::from_byte_slice(&block);
            let sum: u32 = block
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    if (148..156).contains(&i) {
                        32
                    } else {
                        u32::from(*b)
                    }
                })
                .sum();
            if header.cksum().ok() != Some(sum) {
                return Err(TarError::Format(format!(
                    "the header {} is not a valid tar header (bad checksum)",
                    self.after()
                )));
            }
            let size = header.entry_size().map_err(|e| {
                TarError::Format(format!("the header {} has a bad size: {e}", self.after()))
            })?;
            let flag = header.entry_type().as_byte();
            match flag {
                b'x' => {
                    let data = self.extension(size).await?;
                    for ext in ::tar::PaxExtensions::new(&data) {
                        let ext = ext.map_err(|e| {
                            TarError::Format(format!(
                                "a pax header {} is malformed: {e}",
                                self.after()
                            ))
                        })?;
                        match ext.key() {
                            Ok("path") => {
                                pax_path = Some(ext.value().map(str::to_owned).map_err(|_| {
                                    TarError::Format(format!(
                                        "a pax path {} is not UTF-8",
                                        self.after()
                                    ))
                                })?);
                            }
                            Ok("size") => {
                                pax_size = Some(
                                    ext.value().ok().and_then(|v| v.parse().ok()).ok_or_else(
                                        || {
                                            TarError::Format(format!(
                                                "a pax size {} is not a number",
                                                self.after()
                                            ))
                                        },
                                    )?,
                                );
                            }
                            _ => {}
                        }
                    }
                    continue;
                }
                b'L' => {
                    let data = self.extension(size).await?;
                    let name = data.split(|b| *b == 0).next().unwrap_or(&[]);
                    long_path = Some(String::from_utf8(name.to_vec()).map_err(|_| {
                        TarError::Format(format!("a long name {} is not UTF-8", self.after()))
                    })?);
                    continue;
                }
                b'g' | b'K' => {
                    self.extension(size).await?;
                    continue;
                }
                _ => {}
            }
            let raw = match pax_path.take().or(long_path.take()) {
                Some(p) => p,
                None => String::from_utf8(header.path_bytes().into_owned()).map_err(|_| {
                    TarError::Format(format!("an entry name {} is not UTF-8", self.after()))
                })?,
            };
            let path = normalize(&raw).map_err(TarError::Format)?;
            let size = pax_size.take().unwrap_or(size);
            if padded(size).is_none() {
                return Err(TarError::Format(format!(
                    "{path} claims {size} bytes, more than any archive can hold"
                )));
            }
            let kind = match flag {
                b'0' | 0 | b'7' => Kind::File,
                b'5' => Kind::Dir,
                other => Kind::Other(other),
            };
            // Only files carry data that belongs to them; other kinds' sizes are still skipped.
            self.current = Some((path.clone(), size, 0));
            self.last = Some(path.clone());
            return Ok(Some(Entry { path, size, kind }));
        }
    }

    /// Reads up to `max` more bytes of the current entry's data; an empty chunk at its end.
    ///
    /// # Errors
    /// A truncated archive (naming the entry and how far it got), or an I/O error.
    pub async fn chunk(&mut self, max: usize) -> Result<Bytes, TarError> {
        let Some((path, size, read)) = &mut self.current else {
            return Ok(Bytes::new());
        };
        let want = usize::try_from((*size - *read).min(max as u64)).unwrap_or(max);
        let mut buf = BytesMut::zeroed(want);
        let mut got = 0;
        while got < want {
            let n = self.inner.read(&mut buf[got..]).await?;
            if n == 0 {
                return Err(TarError::Truncated(format!(
                    "{path} ends after {} of {size} bytes",
                    *read + got as u64
                )));
            }
            got += n;
        }
        *read += got as u64;
        Ok(buf.freeze())
    }
}

/// A path as found in an archive, normalised; absolute paths and `..` are refused.
fn normalize(raw: &str) -> Result<String, String> {
    if raw.starts_with('/') {
        return Err(format!("{raw:?} is an absolute path"));
    }
    let mut parts = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(format!("{raw:?} leads out of the archive (..)")),
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn write_sample() -> Vec<u8> {
        let mut w = Writer::new(Vec::new());
        w.small_file("a.json", b"{}", 7).await.unwrap();
        w.dir("blobs", 7).await.unwrap();
        w.small_file("blobs/x", &[9u8; 700], 7).await.unwrap();
        w.small_file("empty", b"", 7).await.unwrap();
        let written = w.written();
        let out = w.finish().await.unwrap();
        assert_eq!(written + END, out.len() as u64);
        assert_eq!(
            out.len() as u64,
            entry_len(2).unwrap() + BLOCK + entry_len(700).unwrap() + entry_len(0).unwrap() + END
        );
        out
    }

    async fn read_all(bytes: &[u8]) -> Result<Vec<(Entry, Vec<u8>)>, TarError> {
        let mut r = Reader::new(bytes);
        let mut out = Vec::new();
        while let Some(e) = r.next().await? {
            let mut data = Vec::new();
            loop {
                let c = r.chunk(100).await?;
                if c.is_empty() {
                    break;
                }
                data.extend_from_slice(&c);
            }
            out.push((e, data));
        }
        Ok(out)
    }

    #[tokio::test]
    async fn round_trip_and_the_tar_crate_agrees() {
        let bytes = write_sample().await;
        let got = read_all(&bytes).await.unwrap();
        let names: Vec<(&str, Kind, usize)> = got
            .iter()
            .map(|(e, d)| (e.path.as_str(), e.kind, d.len()))
            .collect();
        assert_eq!(
            names,
            [
                ("a.json", Kind::File, 2),
                ("blobs", Kind::Dir, 0),
                ("blobs/x", Kind::File, 700),
                ("empty", Kind::File, 0)
            ]
        );
        // An independent reader sees the same archive.
        let mut archive = ::tar::Archive::new(&bytes[..]);
        let theirs: Vec<(String, u64, u64)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    e.header().size().unwrap(),
                    e.header().mtime().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            theirs,
            [
                ("a.json".into(), 2, 7),
                ("blobs/".into(), 0, 7),
                ("blobs/x".into(), 700, 7),
                ("empty".into(), 0, 7)
            ]
        );
    }

    #[tokio::test]
    async fn truncation_is_reported_with_the_entry() {
        let bytes = write_sample().await;
        // Cut inside blobs/x's data, inside a header, and before the end marker.
        let data_start = (entry_len(2).unwrap() + BLOCK + BLOCK) as usize;
        for (cut, want) in [
            (data_start + 100, "blobs/x ends after 100 of 700 bytes"),
            (data_start - 300, "a header after blobs is cut short"),
            (
                bytes.len() - END as usize,
                "ends after empty without the end-of-archive",
            ),
            (0, "ends at its start"),
        ] {
            let e = read_all(&bytes[..cut]).await.unwrap_err();
            assert!(matches!(e, TarError::Truncated(_)), "{e}");
            assert!(e.to_string().contains(want), "{cut}: {e}");
        }
        // One zero block then the end of input is accepted.
        assert_eq!(
            read_all(&bytes[..bytes.len() - 512]).await.unwrap().len(),
            4
        );
    }

    #[tokio::test]
    async fn other_tools_archives_pax_long_names_and_bad_paths() {
        // Written by the tar crate: GNU long name, ./ prefix, a pax path.
        let mut b = ::tar::Builder::new(Vec::new());
        let long = format!("./blobs/sha256/{}", "a".repeat(120));
        let mut h = ::tar::Header::new_gnu();
        h.set_size(3);
        h.set_cksum();
        b.append_data(&mut h, &long, &b"abc"[..]).unwrap();
        let mut h = ::tar::Header::new_ustar();
        h.set_size(1);
        b.append_pax_extensions([("path", &b"pax/name"[..])])
            .unwrap();
        h.set_path("short").unwrap();
        h.set_cksum();
        b.append(&h, &b"z"[..]).unwrap();
        let bytes = b.into_inner().unwrap();
        let got = read_all(&bytes).await.unwrap();
        assert_eq!(got[0].0.path, format!("blobs/sha256/{}", "a".repeat(120)));
        assert_eq!(got[0].1, b"abc");
        assert_eq!(got[1].0.path, "pax/name");

        for bad in ["../etc/passwd", "/etc/passwd", "a/../../b"] {
            let mut h = ::tar::Header::new_ustar();
            h.set_size(0);
            h.as_old_mut().name[..bad.len()].copy_from_slice(bad.as_bytes());
            h.set_cksum();
            let mut bytes = h.as_bytes().to_vec();
            bytes.extend_from_slice(&[0u8; 1024]);
            let e = read_all(&bytes).await.unwrap_err();
            assert!(matches!(e, TarError::Format(_)), "{bad}: {e}");
        }
        let mut junk = vec![b'x'; 512];
        junk.extend_from_slice(&[0u8; 1024]);
        let e = read_all(&junk).await.unwrap_err();
        assert!(e.to_string().contains("bad checksum"), "{e}");
    }

    #[tokio::test]
    async fn sizes_beyond_ustar_get_a_pax_record() {
        assert_eq!(pax_size_record(5), "9 size=5\n");
        assert_eq!(pax_size_record(12345), "14 size=12345\n");
        assert_eq!(
            pax_size_record(9_000_000_000).len(),
            "21 size=9000000000\n".len()
        );
        let record = pax_size_record(99_999_999);
        assert_eq!(
            record.len(),
            record.split(' ').next().unwrap().parse::<usize>().unwrap()
        );
        // A header of a 9 GB file, read back (the data itself is not written).
        let mut w = Writer::new(Vec::new());
        w.file("big", 9_000_000_000, 0).await.unwrap();
        assert_eq!(
            w.written(),
            entry_len(9_000_000_000).unwrap() - padded(9_000_000_000).unwrap()
        );
        let bytes = w.finish().await.unwrap();
        let mut r = Reader::new(&bytes[..]);
        let e = r.next().await.unwrap().unwrap();
        assert_eq!((e.path.as_str(), e.size), ("big", 9_000_000_000));
        let mut h = ::tar::Archive::new(&bytes[..]);
        let mut entries = h.entries().unwrap();
        let first = entries.next().unwrap().unwrap();
        assert_eq!(first.header().entry_size().unwrap(), 9_000_000_000);
    }
}
