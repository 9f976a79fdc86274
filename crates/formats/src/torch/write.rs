//! Writes `.pth` files that `torch.load(path, weights_only=True)` accepts: a protocol-2 pickle of
//! an OrderedDict of tensors and one STORED, 64-byte-aligned zip entry per tensor, streamed in a
//! single pass (sizes and CRCs go in data descriptors and the central directory, as torch does).

use crate::error::{FormatError, Result};
use crate::output::OutTensor;
use crate::pickle::PickleWriter;
use std::io::Write;
use std::path::Path;

/// How the state dict sits in the pickled object.
#[derive(Debug, Clone, Copy, Default)]
pub struct PthLayout<'a> {
    /// Nest the state dict under this key (`{'model': state_dict}`), as training checkpoints do.
    pub wrap: Option<&'a str>,
    /// Integer entries beside the nested state dict (`'epoch': 299`); used only with `wrap`.
    pub ints: &'a [(&'a str, i64)],
}

/// Streams a `.pth` zip to `out`. `archive_name` is the archive's root folder (torch uses the
/// file stem); `layout` nests the state dict as `{wrap: OrderedDict, int entries...}` like
/// training checkpoints, or leaves it bare.
pub fn write_pth(
    out: &mut dyn Write,
    path: &Path,
    archive_name: &str,
    mut tensors: Vec<OutTensor<'_>>,
    layout: &PthLayout<'_>,
) -> Result<()> {
    let pickle = state_dict_pickle(&tensors, layout);
    let io = |e: std::io::Error| FormatError::io(path, e);
    let mut zip = ZipStream::new(out, path);
    let small = |zip: &mut ZipStream<'_>, name: &str, data: &[u8]| -> Result<()> {
        zip.entry(
            &format!("{archive_name}/{name}"),
            data.len() as u64,
            &mut |w| w.write_all(data).map_err(io),
        )
    };
    small(&mut zip, "data.pkl", &pickle)?;
    small(&mut zip, ".format_version", b"1")?;
    small(&mut zip, ".storage_alignment", b"64")?;
    small(&mut zip, "byteorder", b"little")?;
    for (key, t) in tensors.iter_mut().enumerate() {
        let name = format!("{archive_name}/data/{key}");
        zip.entry(&name, t.nbytes, &mut |w| (t.write)(w, path))?;
    }
    small(&mut zip, "version", b"3\n")?;
    let id = serialization_id(&pickle);
    small(&mut zip, ".data/serialization_id", id.as_bytes())?;
    zip.finish()
}

/// torch records a 40-digit id per file; ours is derived from the pickle so output is
/// reproducible.
fn serialization_id(pickle: &[u8]) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(pickle);
    d.iter()
        .flat_map(|b| [b / 10 % 10, b % 10])
        .take(40)
        .map(|d| char::from(b'0' + d))
        .collect()
}

fn state_dict_pickle(tensors: &[OutTensor<'_>], layout: &PthLayout<'_>) -> Vec<u8> {
    let mut p = PickleWriter::new();
    if let Some(key) = layout.wrap {
        p.empty_dict();
        p.mark();
        p.str(key);
    }
    p.global("collections", "OrderedDict");
    p.empty_tuple();
    p.reduce();
    p.mark();
    for (key, t) in tensors.iter().enumerate() {
        p.str(&t.name);
        tensor(&mut p, t, key);
    }
    p.setitems();
    if layout.wrap.is_some() {
        for (k, v) in layout.ints {
            p.str(k);
            p.int(*v);
        }
        p.setitems();
    }
    p.finish()
}

fn tensor(p: &mut PickleWriter, t: &OutTensor<'_>, key: usize) {
    let typed = t.dtype.torch_storage_class();
    p.global(
        "torch._utils",
        if typed.is_some() {
            "_rebuild_tensor_v2"
        } else {
            "_rebuild_tensor_v3"
        },
    );
    p.mark();
    // The storage's persistent id: ('storage', class, key, location, numel).
    p.mark();
    p.str("storage");
    match typed {
        Some(class) => p.global("torch", class),
        None => p.global("torch.storage", "UntypedStorage"),
    }
    p.str(&key.to_string());
    p.str("cpu");
    let numel = if typed.is_some() { t.numel() } else { t.nbytes };
    p.int(numel as i64);
    p.tuple_from_mark();
    p.persistent_id();
    p.int(0);
    let shape: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
    p.int_tuple(&shape);
    p.int_tuple(&contiguous_strides(&shape));
    p.bool(false);
    p.global("collections", "OrderedDict");
    p.empty_tuple();
    p.reduce();
    if typed.is_none() {
        p.global("torch", t.dtype.torch_name());
    }
    p.tuple_from_mark();
    p.reduce();
}

pub(crate) fn contiguous_strides<T: Copy + Into<i64>>(shape: &[T]) -> Vec<i64> {
    let mut strides = vec![1i64; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1].into().max(1);
    }
    strides
}

const ALIGN: u64 = 64;
const U32_MAX: u64 = 0xffff_ffff;
const DOS_DATE_1980_01_01: u16 = (1 << 5) | 1;

struct CentralEntry {
    name: String,
    crc: u32,
    size: u64,
    offset: u64,
}

/// A minimal zip writer for STORED entries of known size, written strictly sequentially.
struct ZipStream<'a> {
    out: &'a mut dyn Write,
    /// The output, for naming it in errors.
    path: &'a Path,
    pos: u64,
    entries: Vec<CentralEntry>,
}

struct CrcWriter<'a, 'b> {
    zip: &'b mut ZipStream<'a>,
    crc: crc32fast::Hasher,
    written: u64,
}

impl Write for CrcWriter<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.zip.out.write(buf)?;
        self.crc.update(&buf[..n]);
        self.written += n as u64;
        self.zip.pos += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.zip.out.flush()
    }
}

impl<'a> ZipStream<'a> {
    fn new(out: &'a mut dyn Write, path: &'a Path) -> Self {
        ZipStream {
            out,
            path,
            pos: 0,
            entries: Vec::new(),
        }
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|e| FormatError::io(self.path, e))?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    fn entry(
        &mut self,
        name: &str,
        size: u64,
        write: &mut dyn FnMut(&mut dyn Write) -> Result<()>,
    ) -> Result<()> {
        let offset = self.pos;
        let zip64 = size >= U32_MAX;
        let zip64_extra = if zip64 { 20 } else { 0 };
        let unpadded = offset + 30 + name.len() as u64 + zip64_extra + 4;
        let pad = (ALIGN - unpadded % ALIGN) % ALIGN;
        let mut h = Vec::with_capacity(30 + name.len() + 24 + pad as usize);
        h.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        h.extend_from_slice(&45u16.to_le_bytes()); // version needed: zip64
        h.extend_from_slice(&0x0808u16.to_le_bytes()); // data descriptor, UTF-8 names
        h.extend_from_slice(&0u16.to_le_bytes()); // STORED
        h.extend_from_slice(&0u16.to_le_bytes()); // time
        h.extend_from_slice(&DOS_DATE_1980_01_01.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes()); // crc: in the descriptor
        let small = if zip64 { U32_MAX as u32 } else { size as u32 };
        h.extend_from_slice(&small.to_le_bytes());
        h.extend_from_slice(&small.to_le_bytes());
        h.extend_from_slice(&(name.len() as u16).to_le_bytes());
        h.extend_from_slice(&((zip64_extra + 4 + pad) as u16).to_le_bytes());
        h.extend_from_slice(name.as_bytes());
        if zip64 {
            h.extend_from_slice(&1u16.to_le_bytes());
            h.extend_from_slice(&16u16.to_le_bytes());
            h.extend_from_slice(&size.to_le_bytes());
            h.extend_from_slice(&size.to_le_bytes());
        }
        // Padding field "FB", as torch writes, so that the data starts 64-byte aligned.
        h.extend_from_slice(b"FB");
        h.extend_from_slice(&(pad as u16).to_le_bytes());
        h.resize(h.len() + pad as usize, 0);
        self.put(&h)?;

        let mut w = CrcWriter {
            zip: self,
            crc: crc32fast::Hasher::new(),
            written: 0,
        };
        write(&mut w)?;
        let (crc, written) = (w.crc.finalize(), w.written);
        if written != size {
            return Err(FormatError::Invalid(format!(
                "zip entry {name}: {written} bytes written, {size} announced"
            )));
        }
        let mut d = Vec::with_capacity(24);
        d.extend_from_slice(&0x0807_4b50u32.to_le_bytes());
        d.extend_from_slice(&crc.to_le_bytes());
        if zip64 {
            d.extend_from_slice(&size.to_le_bytes());
            d.extend_from_slice(&size.to_le_bytes());
        } else {
            d.extend_from_slice(&(size as u32).to_le_bytes());
            d.extend_from_slice(&(size as u32).to_le_bytes());
        }
        self.put(&d)?;
        self.entries.push(CentralEntry {
            name: name.to_string(),
            crc,
            size,
            offset,
        });
        Ok(())
    }

    fn finish(mut self) -> Result<()> {
        let cd_start = self.pos;
        let entries = std::mem::take(&mut self.entries);
        for e in &entries {
            let mut extra = Vec::new();
            if e.size >= U32_MAX {
                extra.extend_from_slice(&e.size.to_le_bytes());
                extra.extend_from_slice(&e.size.to_le_bytes());
            }
            if e.offset >= U32_MAX {
                extra.extend_from_slice(&e.offset.to_le_bytes());
            }
            let mut h = Vec::with_capacity(46 + e.name.len() + 28);
            h.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
            h.extend_from_slice(&45u16.to_le_bytes()); // made by
            h.extend_from_slice(&45u16.to_le_bytes()); // needed
            h.extend_from_slice(&0x0808u16.to_le_bytes());
            h.extend_from_slice(&0u16.to_le_bytes());
            h.extend_from_slice(&0u16.to_le_bytes());
            h.extend_from_slice(&DOS_DATE_1980_01_01.to_le_bytes());
            h.extend_from_slice(&e.crc.to_le_bytes());
            let small = e.size.min(U32_MAX) as u32;
            h.extend_from_slice(&small.to_le_bytes());
            h.extend_from_slice(&small.to_le_bytes());
            h.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
            let extra_len = if extra.is_empty() { 0 } else { extra.len() + 4 };
            h.extend_from_slice(&(extra_len as u16).to_le_bytes());
            h.extend_from_slice(&0u16.to_le_bytes()); // comment
            h.extend_from_slice(&0u16.to_le_bytes()); // disk
            h.extend_from_slice(&0u16.to_le_bytes()); // internal attributes
            h.extend_from_slice(&0u32.to_le_bytes()); // external attributes
            h.extend_from_slice(&(e.offset.min(U32_MAX) as u32).to_le_bytes());
            h.extend_from_slice(e.name.as_bytes());
            if !extra.is_empty() {
                h.extend_from_slice(&1u16.to_le_bytes());
                h.extend_from_slice(&(extra.len() as u16).to_le_bytes());
                h.extend_from_slice(&extra);
            }
            self.put(&h)?;
        }
        let cd_size = self.pos - cd_start;
        let n = entries.len() as u64;
        let eocd64_at = self.pos;
        let mut t = Vec::with_capacity(56 + 20 + 22);
        t.extend_from_slice(&0x0606_4b50u32.to_le_bytes());
        t.extend_from_slice(&44u64.to_le_bytes());
        t.extend_from_slice(&45u16.to_le_bytes());
        t.extend_from_slice(&45u16.to_le_bytes());
        t.extend_from_slice(&0u32.to_le_bytes());
        t.extend_from_slice(&0u32.to_le_bytes());
        t.extend_from_slice(&n.to_le_bytes());
        t.extend_from_slice(&n.to_le_bytes());
        t.extend_from_slice(&cd_size.to_le_bytes());
        t.extend_from_slice(&cd_start.to_le_bytes());
        t.extend_from_slice(&0x0706_4b50u32.to_le_bytes());
        t.extend_from_slice(&0u32.to_le_bytes());
        t.extend_from_slice(&eocd64_at.to_le_bytes());
        t.extend_from_slice(&1u32.to_le_bytes());
        t.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
        t.extend_from_slice(&0u16.to_le_bytes());
        t.extend_from_slice(&0u16.to_le_bytes());
        t.extend_from_slice(&(n.min(0xffff) as u16).to_le_bytes());
        t.extend_from_slice(&(n.min(0xffff) as u16).to_le_bytes());
        t.extend_from_slice(&(cd_size.min(U32_MAX) as u32).to_le_bytes());
        t.extend_from_slice(&(cd_start.min(U32_MAX) as u32).to_le_bytes());
        t.extend_from_slice(&0u16.to_le_bytes());
        self.put(&t)?;
        self.out.flush().map_err(|e| FormatError::io(self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;

    #[test]
    fn strides_are_c_order() {
        assert_eq!(contiguous_strides(&[2i64, 3, 4]), vec![12, 4, 1]);
        assert_eq!(contiguous_strides::<i64>(&[]), Vec::<i64>::new());
        assert_eq!(contiguous_strides(&[0i64, 5]), vec![5, 1]);
    }

    #[test]
    fn entries_are_aligned_and_readable_by_the_zip_crate() {
        let mut buf = Vec::new();
        let t = OutTensor::from_bytes("w", DType::F32, vec![3], vec![1u8; 12]);
        write_pth(
            &mut buf,
            Path::new("m.pth"),
            "m",
            vec![t],
            &PthLayout::default(),
        )
        .unwrap();
        let mut z = zip::ZipArchive::new(std::io::Cursor::new(&buf)).unwrap();
        let names: Vec<String> = (0..z.len())
            .map(|i| z.by_index_raw(i).unwrap().name().unwrap().to_string())
            .collect();
        assert!(names.contains(&"m/data/0".to_string()), "{names:?}");
        let f = z.by_name("m/data/0").unwrap();
        assert_eq!(f.data_start().unwrap() % 64, 0);
        assert_eq!(f.crc32(), crc32fast::hash(&[1u8; 12]));
    }

    #[test]
    fn training_checkpoint_layout_reads_back_with_its_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint-7.pth");
        let t = OutTensor::from_bytes("head.bias", DType::F32, vec![2], vec![0u8; 8]);
        let layout = PthLayout {
            wrap: Some("model"),
            ints: &[("epoch", 7)],
        };
        let mut f = std::fs::File::create(&path).unwrap();
        write_pth(
            &mut f,
            Path::new("checkpoint-7.pth"),
            "checkpoint-7",
            vec![t],
            &layout,
        )
        .unwrap();
        drop(f);
        let store = crate::TensorStore::open(&path).unwrap();
        assert_eq!(store.root_choice().key(), Some("model"));
        assert_eq!(store.tensors()[0].name, "head.bias");
        let epoch = store
            .other_entries()
            .iter()
            .find(|e| e.name == "epoch")
            .expect("epoch beside the model");
        assert_eq!(epoch.value, serde_json::json!(7));
    }
}
