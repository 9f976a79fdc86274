//! Decoding any image file to 8-bit RGB the way PIL's `Image.open(f).convert('RGB')` does:
//! format from the content (not the name), EXIF orientation ignored, grayscale replicated,
//! alpha dropped.
//!
//! [`read_image`] reads a file: only a regular file (never a FIFO, device or directory, which
//! could block or never end), at most [`MAX_IMAGE_BYTES`], and only after its first bytes are
//! those of a format this tool decodes. [`decode_rgb`] refuses images of more than [`MAX_PIXELS`]
//! pixels before decoding them.

use crate::resize::Rgb8;
use illama_formats::input::{open_regular, InputError};
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not an image this tool reads ({0})")]
    Format(String),
    #[error("corrupt image: {0}")]
    Corrupt(String),
    #[error("image of {0}x{1} pixels is too large")]
    TooLarge(u32, u32),
}

/// Largest accepted image, in pixels: 64 Mi (67,108,864, e.g. 8192 x 8192).
///
/// PIL's own decompression-bomb error threshold is 178,956,970 pixels (537 MB of RGB per image,
/// several times that while a 16-bit or alpha image is converted), which, multiplied by the
/// loader's workers, can exhaust a machine on a handful of tiny crafted files. ImageNet's largest
/// images are around 30 megapixels and typical ones well under 1, so this lower bound refuses no
/// real dataset image while keeping a decoded image under 192 MiB of RGB.
pub const MAX_PIXELS: u64 = 1 << 26;

/// Largest allocation a decoder may make for one image: [`MAX_PIXELS`] at 8 bytes per pixel
/// (16-bit RGBA, the widest layout decoded), 512 MiB.
pub const MAX_DECODE_ALLOC: u64 = MAX_PIXELS * 8;

/// Largest image file read, in bytes: 64 MiB. ImageNet's largest files are a few MB; a file
/// beyond this is refused before it is read.
pub const MAX_IMAGE_BYTES: u64 = 64 << 20;

/// Why an image file was not read.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Not a regular file, unreadable, or larger than [`MAX_IMAGE_BYTES`] (names the file).
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("{path}: not an image this tool reads (first bytes: {head})")]
    NotImage { path: PathBuf, head: String },
    #[error("{path}: {source}")]
    Decode {
        path: PathBuf,
        #[source]
        source: DecodeError,
    },
}

/// Signatures of the formats decoded (those of the `image` features enabled, as PIL accepts
/// them): JPEG, PNG, BMP, PNM (P1-P7), TIFF (classic and BigTIFF, both byte orders), WebP.
pub fn is_image_signature(head: &[u8]) -> bool {
    head.starts_with(&[0xff, 0xd8, 0xff])
        || head.starts_with(b"\x89PNG\r\n\x1a\n")
        || head.starts_with(b"BM")
        || (head.len() >= 2 && head[0] == b'P' && (b'1'..=b'7').contains(&head[1]))
        || head.starts_with(b"II*\0")
        || head.starts_with(b"MM\0*")
        || head.starts_with(b"II+\0")
        || head.starts_with(b"MM\0+")
        || (head.len() >= 12 && head.starts_with(b"RIFF") && &head[8..12] == b"WEBP")
}

/// Reads and decodes one image file. The file must be a regular file (links are followed; a
/// FIFO or device is refused without blocking) of at most [`MAX_IMAGE_BYTES`] whose first bytes
/// are an image signature; only then is the rest read. Every error names the file.
pub fn read_image(path: &Path) -> Result<Rgb8, ImageError> {
    read_image_with(path, Decoder::PilClosest)
}

/// [`read_image`] with the given JPEG decoder.
pub fn read_image_with(path: &Path, decoder: Decoder) -> Result<Rgb8, ImageError> {
    let bytes = read_image_bytes(path)?;
    decode_rgb_with(&bytes, decoder).map_err(|source| ImageError::Decode {
        path: path.to_path_buf(),
        source,
    })
}

/// The bytes of an image file, with the checks of [`read_image`] but without decoding.
pub fn read_image_bytes(path: &Path) -> Result<Vec<u8>, ImageError> {
    let file = open_regular(path)?;
    let io = |source| {
        ImageError::Input(InputError::Io {
            path: path.to_path_buf(),
            source,
        })
    };
    let len = file.metadata().map_err(io)?.len();
    let too_large = |len| {
        ImageError::Input(InputError::TooLarge {
            path: path.to_path_buf(),
            len,
            max: MAX_IMAGE_BYTES,
            what: "image",
        })
    };
    if len > MAX_IMAGE_BYTES {
        return Err(too_large(len));
    }
    // `take` also guards against a file that grows while it is read.
    let mut reader = file.take(MAX_IMAGE_BYTES + 1);
    let mut out = Vec::with_capacity(16);
    (&mut reader).take(16).read_to_end(&mut out).map_err(io)?;
    if !is_image_signature(&out) {
        let head: Vec<String> = out.iter().take(8).map(|b| format!("{b:02x}")).collect();
        return Err(ImageError::NotImage {
            path: path.to_path_buf(),
            head: if head.is_empty() {
                "none, the file is empty".into()
            } else {
                head.join(" ")
            },
        });
    }
    out.reserve(len as usize);
    reader.read_to_end(&mut out).map_err(io)?;
    if out.len() as u64 > MAX_IMAGE_BYTES {
        return Err(too_large(out.len() as u64));
    }
    Ok(out)
}

/// A JPEG whose last scan is not followed by the end-of-image marker was cut short. Decoders
/// differ here (some fill the missing blocks with gray); PIL refuses such files, so do we.
fn check_jpeg_complete(bytes: &[u8]) -> Result<(), DecodeError> {
    if !bytes.starts_with(&[0xff, 0xd8]) {
        return Ok(());
    }
    let last_scan = bytes.windows(2).rposition(|w| w == [0xff, 0xda]);
    let complete = last_scan.is_some_and(|s| bytes[s..].windows(2).any(|w| w == [0xff, 0xd9]));
    if complete {
        Ok(())
    } else {
        Err(DecodeError::Corrupt(
            "truncated JPEG (no end-of-image marker after the last scan)".into(),
        ))
    }
}

/// Color JPEGs through `jpeg-decoder`, whose IDCT and chroma upsampling come closest to the
/// libjpeg-turbo PIL uses (mean |difference| 0.08-0.11 per channel on the fixture photographs,
/// against 0.17-0.28 for zune-jpeg). `None` for what the general path (zune-jpeg) does better or
/// alone: grayscale (0.009 against 0.035 after resizing), CMYK, 16-bit.
fn decode_jpeg(bytes: &[u8]) -> Result<Option<Rgb8>, DecodeError> {
    let mut d = jpeg_decoder::Decoder::new(Cursor::new(bytes));
    d.read_info()
        .map_err(|e| DecodeError::Corrupt(e.to_string()))?;
    let info = d
        .info()
        .ok_or_else(|| DecodeError::Corrupt("no JPEG header".into()))?;
    let (w, h) = (info.width as usize, info.height as usize);
    if w as u64 * h as u64 > MAX_PIXELS {
        return Err(DecodeError::TooLarge(info.width as u32, info.height as u32));
    }
    let data = match info.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 => d
            .decode()
            .map_err(|e| DecodeError::Corrupt(e.to_string()))?,
        _ => return Ok(None),
    };
    if data.len() != w * h * 3 {
        return Err(DecodeError::Corrupt(format!(
            "decoded {} bytes for {w}x{h} pixels",
            data.len()
        )));
    }
    Ok(Some(Rgb8 {
        width: w,
        height: h,
        data,
    }))
}

/// Which JPEG decoder to use for color JPEGs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Decoder {
    /// `jpeg-decoder`, the closest to PIL's libjpeg-turbo (mean |difference| 0.08-0.11 per
    /// channel on the fixture photographs): evaluation, where numbers are compared with PyTorch.
    #[default]
    PilClosest,
    /// `zune-jpeg` (SIMD), about 1.7x faster on photo-sized JPEGs, 0.17-0.28 from PIL: training,
    /// where every image is randomly cropped, resized and augmented anyway.
    Fast,
}

/// Decodes with [`Decoder::PilClosest`].
pub fn decode_rgb(bytes: &[u8]) -> Result<Rgb8, DecodeError> {
    decode_rgb_with(bytes, Decoder::PilClosest)
}

pub fn decode_rgb_with(bytes: &[u8], decoder: Decoder) -> Result<Rgb8, DecodeError> {
    check_jpeg_complete(bytes)?;
    if decoder == Decoder::PilClosest && bytes.starts_with(&[0xff, 0xd8]) {
        if let Some(img) = decode_jpeg(bytes)? {
            return Ok(img);
        }
    }
    let reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| DecodeError::Format(e.to_string()))?;
    if reader.format().is_none() {
        let head: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
        return Err(DecodeError::Format(format!(
            "unrecognised content starting {}",
            head.join(" ")
        )));
    }
    let (w, h) = reader
        .into_dimensions()
        .map_err(|e| DecodeError::Corrupt(e.to_string()))?;
    if w as u64 * h as u64 > MAX_PIXELS {
        return Err(DecodeError::TooLarge(w, h));
    }
    let reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| DecodeError::Format(e.to_string()))?;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_DECODE_ALLOC);
    let mut reader = reader;
    reader.limits(limits);
    let img = reader.decode().map_err(|e| match e {
        image::ImageError::Unsupported(u) => DecodeError::Format(u.to_string()),
        other => DecodeError::Corrupt(other.to_string()),
    })?;
    let rgb = img.to_rgb8();
    Ok(Rgb8 {
        width: rgb.width() as usize,
        height: rgb.height() as usize,
        data: rgb.into_raw(),
    })
}
