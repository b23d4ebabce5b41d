//! The write-ahead log: what makes an acknowledgement a promise.
//!
//! A request is acknowledged only after its accepted items are written to the
//! current segment and `fdatasync`ed. Requests that arrive while a sync is under
//! way are written together and share the next sync (group commit), so
//! durability costs one sync per group, not per request.
//!
//! Segments are numbered. When the buffer is flushed to Parquet, the log moves to
//! a new segment; once the flush's files are durable, the checkpoint file records
//! the last flushed segment and older segments are let go. At start, segments
//! after the checkpoint are replayed.
//!
//! Segments let go are kept as spares, and the next segments are written over
//! them ([`Spares`]): a sync of records written over a file's own blocks is
//! only theirs, where one that grows a file also allocates its blocks and
//! writes its inode, and deleting a file frees its page cache and blocks.
//! That was a third of the log's share of the server's CPU (README,
//! Performance, session 28).
//!
//! Record framing: `len: u32 LE | crc32(segment + kind + payload): u32 LE | kind: u8 | payload`,
//! `segment` the segment's number as 8 bytes LE. A torn or corrupt tail (a
//! crash mid-write, never acknowledged), or the records a spare held before,
//! whose checksums are of another segment, end the replay of that segment.
//! So nothing may be appended after a torn record: a failed append is cut off
//! the segment, or, if that fails, the log moves to a new segment, before the
//! next append is written (see [`Wal::append_and_sync`]). Records written
//! before segments were stamped (checksums of `kind + payload`) are read as
//! well; their segments are deleted, never written over.

use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const SEGMENT_PREFIX: &str = "segment-";
const SPARE_PREFIX: &str = "spare-";
const SEGMENT_SUFFIX: &str = ".wal";
/// Spares kept: a flush takes one when it starts the next segment and gives
/// one back when its checkpoint lets the previous segment go, so two cover a
/// flush under way; more hold disk for nothing.
const MAX_SPARES: usize = 3;
const CHECKPOINT_FILE: &str = "checkpoint";
/// Length and checksum; the length counts the kind byte and the payload.
const HEADER_LEN: usize = 8;
/// Largest record accepted when reading back; anything larger is corruption.
const MAX_RECORD_LEN: usize = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("write-ahead log I/O on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("write-ahead log checkpoint {path} is not a segment number: {text:?}")]
    BadCheckpoint { path: PathBuf, text: String },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Signal {
    /// An `ExportTraceServiceRequest`, protobuf-encoded.
    Traces = 1,
    /// An `ExportMetricsServiceRequest`, protobuf-encoded.
    Metrics = 2,
}

impl Signal {
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Signal::Traces),
            2 => Some(Signal::Metrics),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub signal: Signal,
    pub payload: Vec<u8>,
}

fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{SEGMENT_PREFIX}{segment:013}{SEGMENT_SUFFIX}"))
}

fn spare_path(dir: &Path, spare: u64) -> PathBuf {
    dir.join(format!("{SPARE_PREFIX}{spare:013}{SEGMENT_SUFFIX}"))
}

/// The checksum of a record of `segment`.
fn stamped_crc(segment: u64, kind: u8, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&segment.to_le_bytes());
    hasher.update(&[kind]);
    hasher.update(payload);
    hasher.finalize()
}

/// The checksum of a record written before records were stamped with their segment.
fn unstamped_crc(kind: u8, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&[kind]);
    hasher.update(payload);
    hasher.finalize()
}

fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_at(dir))
}

/// The numbers of the files in `dir` named `{prefix}{number}.wal`, in order.
fn list_numbered(dir: &Path, prefix: &str) -> Result<Vec<u64>, WalError> {
    let mut numbers = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_at(dir))? {
        let entry = entry.map_err(io_at(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(number) = name
            .strip_prefix(prefix)
            .and_then(|n| n.strip_suffix(SEGMENT_SUFFIX))
            && let Ok(number) = number.parse()
        {
            numbers.push(number);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

/// The segments present in `dir`, oldest first.
pub fn list_segments(dir: &Path) -> Result<Vec<u64>, WalError> {
    list_numbered(dir, SEGMENT_PREFIX)
}

/// How a segment's first record is checksummed: what decides whether the
/// segment may be written over once it is let go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stamp {
    /// No intact record, so nothing to be mistaken for one later.
    Empty,
    Stamped,
    /// Written by a Weft from before segments were reused.
    Unstamped,
}

/// The intact records at the start of `bytes`, the segment `segment`'s
/// contents, and how many bytes follow them.
fn parse_segment(segment: u64, bytes: &[u8]) -> (Vec<Record>, Stamp, usize) {
    let mut records = Vec::new();
    let mut stamp = Stamp::Empty;
    let mut rest = bytes;
    while rest.len() >= HEADER_LEN {
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if len == 0 || len > MAX_RECORD_LEN || rest.len() < HEADER_LEN + len {
            break;
        }
        let body = &rest[HEADER_LEN..HEADER_LEN + len];
        let Some(signal) = Signal::from_byte(body[0]) else {
            break;
        };
        let payload = &body[1..];
        let this = if stamped_crc(segment, body[0], payload) == crc {
            Stamp::Stamped
        } else if unstamped_crc(body[0], payload) == crc {
            Stamp::Unstamped
        } else {
            break;
        };
        if stamp == Stamp::Empty {
            stamp = this;
        }
        records.push(Record {
            signal,
            payload: payload.to_vec(),
        });
        rest = &rest[HEADER_LEN + len..];
    }
    (records, stamp, rest.len())
}

fn read_file(path: &Path) -> Result<Vec<u8>, WalError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(io_at(path))?;
    Ok(bytes)
}

/// Reads every intact record of a segment.
pub fn read_segment(dir: &Path, segment: u64) -> Result<Vec<Record>, WalError> {
    let (records, _, ignored_bytes) =
        parse_segment(segment, &read_file(&segment_path(dir, segment))?);
    if ignored_bytes > 0 {
        // Usual for a segment written over a spare, whose older records follow.
        tracing::debug!(
            segment,
            ignored_bytes,
            "write-ahead log segment ends in a torn record or a spare's older records; neither was acknowledged"
        );
    }
    Ok(records)
}

/// The last segment whose contents are durably in Parquet (0: none yet).
pub fn read_checkpoint(dir: &Path) -> Result<u64, WalError> {
    let path = dir.join(CHECKPOINT_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|_| WalError::BadCheckpoint { path, text }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(WalError::Io { path, source: e }),
    }
}

/// Records that every segment up to `segment` is in Parquet, then lets them
/// go: kept as spares while fewer than [`MAX_SPARES`] are, else deleted.
pub fn checkpoint(dir: &Path, segment: u64) -> Result<(), WalError> {
    let path = dir.join(CHECKPOINT_FILE);
    let tmp = dir.join(format!("{CHECKPOINT_FILE}.tmp"));
    {
        let mut file = File::create(&tmp).map_err(io_at(&tmp))?;
        file.write_all(segment.to_string().as_bytes())
            .map_err(io_at(&tmp))?;
        file.sync_all().map_err(io_at(&tmp))?;
    }
    fs::rename(&tmp, &path).map_err(io_at(&path))?;
    sync_dir(dir)?;
    let mut spares = list_numbered(dir, SPARE_PREFIX)?.len();
    for old in list_segments(dir)? {
        if old > segment {
            continue;
        }
        let old_path = segment_path(dir, old);
        if spares < MAX_SPARES && may_be_written_over(&old_path, old)? {
            // The spare keeps the segment's number, so no two spares share a name.
            let spare = spare_path(dir, old);
            fs::rename(&old_path, &spare).map_err(io_at(&spare))?;
            spares += 1;
        } else {
            fs::remove_file(&old_path).map_err(io_at(&old_path))?;
        }
    }
    Ok(())
}

/// Whether records written over the segment at `path` would be read back
/// alone: its own records, stamped with its number, fail the checksum of any
/// other segment; records from before stamping would not.
fn may_be_written_over(path: &Path, segment: u64) -> Result<bool, WalError> {
    let mut file = File::open(path).map_err(io_at(path))?;
    // The first header, then the record it gives the length of.
    let mut first = Vec::with_capacity(HEADER_LEN);
    (&mut file)
        .take(HEADER_LEN as u64)
        .read_to_end(&mut first)
        .map_err(io_at(path))?;
    if let Some(len) = first.first_chunk::<4>().map(|len| u32::from_le_bytes(*len)) {
        file.take(u64::from(len).min(MAX_RECORD_LEN as u64))
            .read_to_end(&mut first)
            .map_err(io_at(path))?;
    }
    let (_, stamp, _) = parse_segment(segment, &first);
    Ok(stamp != Stamp::Unstamped)
}

/// Writes all of `slices` in order, as `write_all` writes one: a `writev`
/// takes at most `IOV_MAX` (1,024) slices, and may write fewer bytes.
fn write_all_vectored(file: &mut File, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
    while !slices.is_empty() {
        match file.write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => IoSlice::advance_slices(&mut slices, written),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// The open segment that new records are appended to.
pub struct Wal {
    dir: PathBuf,
    segment: u64,
    file: File,
    path: PathBuf,
    /// Bytes of the segment that hold whole, synced records.
    synced_len: u64,
    /// A failed append may have left part of its records after `synced_len`.
    torn: bool,
}

impl Wal {
    /// Starts a new segment numbered after every existing one and the checkpoint.
    pub fn create(dir: &Path) -> Result<Self, WalError> {
        fs::create_dir_all(dir).map_err(io_at(dir))?;
        let last = list_segments(dir)?
            .last()
            .copied()
            .unwrap_or(0)
            .max(read_checkpoint(dir)?);
        Self::open_segment(dir, last + 1)
    }

    /// Starts segment `segment`: written over a spare if there is one, else
    /// a new file. Either way the file's cursor is at 0.
    fn open_segment(dir: &Path, segment: u64) -> Result<Self, WalError> {
        let path = segment_path(dir, segment);
        let mut options = OpenOptions::new();
        options.write(true);
        match list_numbered(dir, SPARE_PREFIX)?.first() {
            Some(&spare) => fs::rename(spare_path(dir, spare), &path).map_err(io_at(&path))?,
            None => drop(options.create_new(true)),
        }
        let file = options.open(&path).map_err(io_at(&path))?;
        // The segment's name must last before its first record is acknowledged.
        sync_dir(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
            segment,
            file,
            path,
            synced_len: 0,
            torn: false,
        })
    }

    pub fn segment(&self) -> u64 {
        self.segment
    }

    /// Writes `records` and syncs them to disk before returning.
    ///
    /// One `writev` for the whole group, headers and payloads as they lie:
    /// copying each payload (a request of 512 spans is about 220 KB) into a
    /// buffer first was about half a percent of the server's CPU.
    ///
    /// If the write or the sync fails (a full disk, an I/O error), part of the
    /// group may be in the file. The records are not acknowledged, and the
    /// segment is cut back to its synced records before anything else is
    /// appended: replay stops at a torn record, so records appended after
    /// one, acknowledged or not, would never be read back.
    pub fn append_and_sync<'a>(
        &mut self,
        records: impl IntoIterator<Item = (Signal, &'a [u8])>,
    ) -> Result<(), WalError> {
        if self.torn {
            self.repair()?;
        }
        let records: Vec<(Signal, &[u8])> = records.into_iter().collect();
        let mut headers = Vec::with_capacity(records.len());
        for (signal, payload) in &records {
            let len = u32::try_from(payload.len() + 1).map_err(|_| WalError::Io {
                path: self.path.clone(),
                source: io::Error::new(io::ErrorKind::InvalidInput, "record larger than 4 GiB"),
            })?;
            let crc = stamped_crc(self.segment, *signal as u8, payload);
            // The header, then the signal, the first byte of the body.
            let mut header = [0u8; HEADER_LEN + 1];
            header[..4].copy_from_slice(&len.to_le_bytes());
            header[4..8].copy_from_slice(&crc.to_le_bytes());
            header[8] = *signal as u8;
            headers.push(header);
        }
        let mut slices: Vec<IoSlice<'_>> = headers
            .iter()
            .zip(&records)
            .flat_map(|(header, (_, payload))| [IoSlice::new(header), IoSlice::new(payload)])
            .collect();
        let group_len: usize = slices.iter().map(|slice| slice.len()).sum();
        let written =
            write_all_vectored(&mut self.file, &mut slices).and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                self.synced_len += group_len as u64;
                Ok(())
            }
            Err(source) => {
                self.torn = true;
                // Repaired now if it can be, so the failed records are not
                // replayed at a restart either; else before the next append.
                if let Err(error) = self.repair() {
                    tracing::warn!(%error, "could not yet remove a failed write-ahead log append");
                }
                Err(WalError::Io {
                    path: self.path.clone(),
                    source,
                })
            }
        }
    }

    /// Removes what a failed append left: cuts the segment back to its synced
    /// records, the next append to go right after them, or, if that fails,
    /// starts a new segment (replay then stops at the old one's torn tail,
    /// after its last synced record).
    fn repair(&mut self) -> Result<(), WalError> {
        let cut = self
            .file
            .set_len(self.synced_len)
            .and_then(|()| self.file.sync_data())
            .and_then(|()| self.file.seek(SeekFrom::Start(self.synced_len)).map(drop));
        match cut {
            Ok(()) => self.torn = false,
            Err(error) => {
                tracing::warn!(
                    path = %self.path.display(),
                    %error,
                    "could not cut a failed append off the write-ahead log; starting a new segment"
                );
                self.rotate()?;
            }
        }
        Ok(())
    }

    /// Closes the current segment and starts the next. Returns the closed one.
    pub fn rotate(&mut self) -> Result<u64, WalError> {
        let closed = self.segment;
        let next = Self::open_segment(&self.dir, closed + 1)?;
        *self = next;
        Ok(closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_and_a_torn_tail_is_ignored() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let mut wal = Wal::create(dir.path())?;
        assert_eq!(wal.segment(), 1);
        wal.append_and_sync([
            (Signal::Traces, b"abc".as_slice()),
            (Signal::Metrics, b"".as_slice()),
        ])?;
        // A crash in the middle of a write leaves a partial record.
        let mut file = OpenOptions::new()
            .append(true)
            .open(segment_path(dir.path(), 1))?;
        file.write_all(&[200, 0, 0, 0, 1, 2])?;
        let records = read_segment(dir.path(), 1)?;
        assert_eq!(
            records,
            vec![
                Record {
                    signal: Signal::Traces,
                    payload: b"abc".to_vec()
                },
                Record {
                    signal: Signal::Metrics,
                    payload: vec![]
                },
            ]
        );
        Ok(())
    }

    #[test]
    fn a_group_of_more_records_than_one_write_takes_is_written_whole()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let mut wal = Wal::create(dir.path())?;
        // Two slices a record: three writes' worth of slices, and payloads
        // of every length up to a few bytes.
        let payloads: Vec<Vec<u8>> = (0..1500u32)
            .map(|i| i.to_le_bytes()[..(i % 5) as usize].to_vec())
            .collect();
        wal.append_and_sync(payloads.iter().map(|p| (Signal::Traces, p.as_slice())))?;
        let read: Vec<Vec<u8>> = read_segment(dir.path(), 1)?
            .into_iter()
            .map(|record| record.payload)
            .collect();
        assert_eq!(read, payloads);
        Ok(())
    }

    /// Set in the process that [`an_append_that_fails_partway_is_cut_off`]
    /// starts with a limit on file sizes.
    const FILE_SIZE_LIMITED: &str = "WEFT_TEST_FILE_SIZE_LIMITED";

    /// A write that fails partway (a full disk; here the file size limit,
    /// which ends a write at 64 KiB with `EFBIG`) leaves part of a record;
    /// the next append must still be read back. The limit is set with
    /// bash's `ulimit` in a process of its own running this test alone, so
    /// no other test meets it; `trap ''` ignores the `SIGXFSZ` that would
    /// otherwise end that process.
    #[test]
    fn an_append_that_fails_partway_is_cut_off() -> Result<(), Box<dyn std::error::Error>> {
        if std::env::var_os(FILE_SIZE_LIMITED).is_none() {
            let name = concat!(module_path!(), "::an_append_that_fails_partway_is_cut_off");
            let name = name.split_once("::").map_or(name, |(_, path)| path);
            let output = std::process::Command::new("bash")
                .args([
                    "-c",
                    r#"trap '' XFSZ; ulimit -S -f 64 && exec "$@""#,
                    "bash",
                ])
                .arg(std::env::current_exe()?)
                .args(["--exact", name, "--nocapture", "--test-threads=1"])
                .env(FILE_SIZE_LIMITED, "1")
                .output()?;
            let report = String::from_utf8_lossy(&output.stdout);
            assert!(
                output.status.success(),
                "{report}{}",
                String::from_utf8_lossy(&output.stderr)
            );
            // The filter must have found this test, or nothing was checked.
            assert!(report.contains("1 passed"), "{report}");
            return Ok(());
        }
        let dir = tempfile::tempdir()?;
        let mut wal = Wal::create(dir.path())?;
        let first = vec![1u8; 60 * 1024];
        wal.append_and_sync([(Signal::Traces, first.as_slice())])?;
        // Crosses the limit: about 4 KiB of it is written, then the write fails.
        let refused = vec![2u8; 10 * 1024];
        assert!(
            wal.append_and_sync([(Signal::Traces, refused.as_slice())])
                .is_err()
        );
        let next = vec![3u8; 1024];
        wal.append_and_sync([(Signal::Metrics, next.as_slice())])?;
        let read = read_segment(dir.path(), wal.segment())?;
        assert_eq!(
            read,
            vec![
                Record {
                    signal: Signal::Traces,
                    payload: first
                },
                Record {
                    signal: Signal::Metrics,
                    payload: next
                },
            ]
        );
        Ok(())
    }

    #[test]
    fn checkpoint_keeps_flushed_segments_as_spares_up_to_a_limit()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let mut wal = Wal::create(dir.path())?;
        for closed in 1..=MAX_SPARES as u64 + 1 {
            assert_eq!(wal.rotate()?, closed);
        }
        checkpoint(dir.path(), MAX_SPARES as u64 + 1)?;
        assert_eq!(read_checkpoint(dir.path())?, MAX_SPARES as u64 + 1);
        assert_eq!(list_segments(dir.path())?, vec![MAX_SPARES as u64 + 2]);
        let spares = list_numbered(dir.path(), SPARE_PREFIX)?;
        assert_eq!(spares, (1..=MAX_SPARES as u64).collect::<Vec<_>>());
        // A restart continues after both the checkpoint and the open segment,
        // over a spare.
        let reopened = Wal::create(dir.path())?;
        assert_eq!(reopened.segment(), MAX_SPARES as u64 + 3);
        assert_eq!(list_numbered(dir.path(), SPARE_PREFIX)?, spares[1..]);
        Ok(())
    }

    #[test]
    fn a_segment_written_over_a_spare_reads_back_only_its_own_records()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let mut wal = Wal::create(dir.path())?;
        let old: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 1000]).collect();
        wal.append_and_sync(old.iter().map(|p| (Signal::Traces, p.as_slice())))?;
        wal.append_and_sync([(Signal::Metrics, b"later".as_slice())])?;
        assert_eq!(wal.rotate()?, 1);
        checkpoint(dir.path(), 1)?;
        assert_eq!(wal.rotate()?, 2);
        // Segment 3 is segment 1's file: its records are all still there.
        let path = segment_path(dir.path(), 3);
        assert_eq!(fs::metadata(&path)?.len(), 4 * (9 + 1000) + 9 + 5);
        assert!(list_numbered(dir.path(), SPARE_PREFIX)?.is_empty());

        // One record over the first of the old ones, then one that ends
        // exactly where an old record began.
        wal.append_and_sync([(Signal::Traces, b"new".as_slice())])?;
        assert_eq!(
            read_segment(dir.path(), 3)?,
            vec![Record {
                signal: Signal::Traces,
                payload: b"new".to_vec()
            }]
        );
        let filler = vec![7u8; 1000 - 12];
        wal.append_and_sync([(Signal::Metrics, filler.as_slice())])?;
        let read = read_segment(dir.path(), 3)?;
        assert_eq!(read.len(), 2);
        assert_eq!(read[1].payload, filler);
        assert_eq!(fs::metadata(&path)?.len(), 4 * (9 + 1000) + 9 + 5);
        Ok(())
    }

    #[test]
    fn unstamped_segments_are_read_and_never_written_over() -> Result<(), Box<dyn std::error::Error>>
    {
        let dir = tempfile::tempdir()?;
        // As a Weft from before stamps wrote it.
        let mut unstamped = Vec::new();
        for payload in [b"one".as_slice(), b"two"] {
            unstamped.extend_from_slice(&(payload.len() as u32 + 1).to_le_bytes());
            unstamped
                .extend_from_slice(&unstamped_crc(Signal::Traces as u8, payload).to_le_bytes());
            unstamped.push(Signal::Traces as u8);
            unstamped.extend_from_slice(payload);
        }
        fs::write(segment_path(dir.path(), 1), &unstamped)?;
        let payloads: Vec<Vec<u8>> = read_segment(dir.path(), 1)?
            .into_iter()
            .map(|r| r.payload)
            .collect();
        assert_eq!(payloads, [b"one".to_vec(), b"two".to_vec()]);

        let mut wal = Wal::create(dir.path())?;
        wal.append_and_sync([(Signal::Traces, b"three".as_slice())])?;
        assert_eq!(wal.rotate()?, 2);
        checkpoint(dir.path(), 2)?;
        // Segment 2 is kept to be written over; segment 1 is not.
        assert_eq!(list_numbered(dir.path(), SPARE_PREFIX)?, vec![2]);
        Ok(())
    }
}
