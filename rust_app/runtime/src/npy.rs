//! Reading and writing `.npy` files (format versions 1.0, 2.0 and 3.0).
//!
//! Only what a model takes and gives: C-order arrays of the plan dtypes,
//! little-endian (or `|` for one-byte types). A header's shape is never used
//! to size an allocation: the caller compares it with the plan first and only
//! then reads the plan's number of bytes.

use std::io::{ErrorKind, Read, Write};

pub use crate::plan::describe;
use crate::plan::DType;
use crate::Error;

const MAGIC: &[u8] = b"\x93NUMPY";
/// Longest header dict accepted. numpy writes about 128 bytes and its own
/// reader refuses more than 10 000 by default.
pub const MAX_HEADER_LEN: usize = 65_536;

/// The array description in a .npy header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub dtype: DType,
    pub shape: Vec<usize>,
}

fn npy_err(what: impl Into<String>) -> Error {
    Error::Npy(what.into())
}

/// Fills `buf` from `r`; `Ok(n)` with `n < buf.len()` only at end of input.
fn read_full<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> Result<usize, Error> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::Io(format!("read failed: {e}"))),
        }
    }
    Ok(n)
}

/// Reads the magic, version and header dict, leaving `r` at the array data.
pub fn read_header<R: Read + ?Sized>(r: &mut R) -> Result<Header, Error> {
    let mut pre = [0u8; 8];
    let n = read_full(r, &mut pre)?;
    if n < MAGIC.len() || &pre[..MAGIC.len()] != MAGIC {
        return Err(npy_err("not a .npy file (bad magic)"));
    }
    if n < pre.len() {
        return Err(npy_err("truncated .npy header"));
    }
    let len = match pre[6] {
        1 => {
            let mut b = [0u8; 2];
            if read_full(r, &mut b)? < 2 {
                return Err(npy_err("truncated .npy header"));
            }
            usize::from(u16::from_le_bytes(b))
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            if read_full(r, &mut b)? < 4 {
                return Err(npy_err("truncated .npy header"));
            }
            usize::try_from(u32::from_le_bytes(b)).unwrap_or(usize::MAX)
        }
        v => return Err(npy_err(format!("unsupported .npy format version {v}.{}", pre[7]))),
    };
    if len > MAX_HEADER_LEN {
        return Err(npy_err(format!("header of {len} bytes is too long (limit {MAX_HEADER_LEN})")));
    }
    let mut dict = vec![0u8; len];
    if read_full(r, &mut dict)? < len {
        return Err(npy_err("truncated .npy header"));
    }
    parse_dict(&dict)
}

/// Reads exactly `nbytes` of array data and checks that nothing follows.
/// `nbytes` must come from the plan, not from the file.
pub fn read_data<R: Read + ?Sized>(r: &mut R, nbytes: usize) -> Result<Vec<u8>, Error> {
    let mut data = vec![0u8; nbytes];
    let n = read_full(r, &mut data)?;
    if n < nbytes {
        return Err(npy_err(format!("truncated array data: expected {nbytes} bytes, got {n}")));
    }
    if read_full(r, &mut [0u8; 1])? != 0 {
        return Err(npy_err("unexpected data after the array"));
    }
    Ok(data)
}

/// Reads a whole .npy stream holding an array of exactly `dtype` and
/// `shape`; a mismatch is an `Error::Input` before any data is read.
pub fn read_expected<R: Read + ?Sized>(
    r: &mut R,
    dtype: DType,
    shape: &[usize],
) -> Result<Vec<u8>, Error> {
    let header = read_header(r)?;
    if header.dtype != dtype || header.shape != shape {
        return Err(Error::Input(format!(
            "expected {}, got {}",
            describe(dtype, shape),
            describe(header.dtype, &header.shape)
        )));
    }
    let nbytes = shape.iter().try_fold(dtype.itemsize(), |n, &d| n.checked_mul(d));
    read_data(r, nbytes.ok_or_else(|| npy_err("array too large"))?)
}

/// The .npy v1 header (or v2 if the dict needs it) for an array.
pub fn header_bytes(dtype: DType, shape: &[usize]) -> Vec<u8> {
    let order = if dtype.itemsize() == 1 { '|' } else { '<' };
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let tuple = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut dict = format!(
        "{{'descr': '{order}{}{}', 'fortran_order': False, 'shape': {tuple}, }}",
        dtype.npy_kind(),
        dtype.itemsize()
    );
    // numpy pads with spaces and a final newline so the data starts on a
    // 64-byte boundary.
    let padded = |pre: usize| (pre + dict.len() + 1).div_ceil(64) * 64;
    let v1 = padded(10) - 10 <= usize::from(u16::MAX);
    let pre = if v1 { 10 } else { 12 };
    let total = padded(pre);
    dict.push_str(&" ".repeat(total - pre - dict.len() - 1));
    dict.push('\n');
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(MAGIC);
    if v1 {
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&[2, 0]);
        out.extend_from_slice(&(dict.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(dict.as_bytes());
    out
}

/// Writes a C-order little-endian array; `data` must be its raw bytes.
pub fn write<W: Write + ?Sized>(
    w: &mut W,
    dtype: DType,
    shape: &[usize],
    data: &[u8],
) -> Result<(), Error> {
    let expected = shape.iter().try_fold(dtype.itemsize(), |n, &d| n.checked_mul(d));
    if expected != Some(data.len()) {
        return Err(npy_err(format!(
            "{} bytes do not match {}",
            data.len(),
            describe(dtype, shape)
        )));
    }
    let io = |e: std::io::Error| Error::Io(format!("write failed: {e}"));
    w.write_all(&header_bytes(dtype, shape)).map_err(io)?;
    w.write_all(data).map_err(io)?;
    w.flush().map_err(io)
}

/// A value in the header dict (a Python literal).
enum Lit {
    Str(String),
    Bool(bool),
    Tuple(Vec<usize>),
}

/// Parses `{'descr': '<f4', 'fortran_order': False, 'shape': (1, 3), }`.
fn parse_dict(bytes: &[u8]) -> Result<Header, Error> {
    let text = std::str::from_utf8(bytes).map_err(|_| npy_err("malformed header: not UTF-8"))?;
    let mut c = Cursor { s: text.trim_end().as_bytes(), pos: 0 };
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    c.eat(b'{')?;
    while !c.try_eat(b'}') {
        let key = c.string()?;
        c.eat(b':')?;
        let value = c.literal()?;
        match (key.as_str(), value) {
            ("descr", Lit::Str(s)) if descr.is_none() => descr = Some(s),
            ("fortran_order", Lit::Bool(b)) if fortran.is_none() => fortran = Some(b),
            ("shape", Lit::Tuple(t)) if shape.is_none() => shape = Some(t),
            ("descr", _) => return Err(npy_err("unsupported dtype (structured or sub-array)")),
            _ => return Err(npy_err(format!("malformed header: unexpected key '{key}'"))),
        }
        if !c.try_eat(b',') {
            c.eat(b'}')?;
            break;
        }
    }
    c.skip_ws();
    if c.pos != c.s.len() {
        return Err(npy_err("malformed header: data after the dict"));
    }
    let (Some(descr), Some(fortran), Some(shape)) = (descr, fortran, shape) else {
        return Err(npy_err("malformed header: needs keys 'descr', 'fortran_order' and 'shape'"));
    };
    if fortran {
        return Err(npy_err("Fortran-order arrays are not supported (save in C order)"));
    }
    let dtype = parse_descr(&descr)?;
    if shape.iter().try_fold(dtype.itemsize(), |n, &d| n.checked_mul(d)).is_none() {
        return Err(npy_err("array too large"));
    }
    Ok(Header { dtype, shape })
}

fn parse_descr(descr: &str) -> Result<DType, Error> {
    let unsupported = || npy_err(format!("unsupported dtype '{descr}'"));
    let mut chars = descr.chars();
    let (order, kind) =
        (chars.next().ok_or_else(unsupported)?, chars.next().ok_or_else(unsupported)?);
    if kind == 'O' {
        return Err(npy_err("object arrays are not supported"));
    }
    let size: usize = chars.as_str().parse().map_err(|_| unsupported())?;
    let dtype = DType::from_npy(kind, size).ok_or_else(unsupported)?;
    match order {
        '<' => Ok(dtype),
        '|' if size == 1 => Ok(dtype),
        '>' if size > 1 => Err(npy_err(format!("big-endian arrays are not supported ('{descr}')"))),
        '>' => Ok(dtype),
        _ => Err(unsupported()),
    }
}

struct Cursor<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn skip_ws(&mut self) {
        while self.s.get(self.pos).is_some_and(|b| b.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }

    fn try_eat(&mut self, b: u8) -> bool {
        self.skip_ws();
        let hit = self.s.get(self.pos) == Some(&b);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn eat(&mut self, b: u8) -> Result<(), Error> {
        if self.try_eat(b) {
            Ok(())
        } else {
            Err(npy_err(format!("malformed header: expected '{}'", b as char)))
        }
    }

    /// A Python string literal in single or double quotes, no escapes.
    fn string(&mut self) -> Result<String, Error> {
        self.skip_ws();
        let quote = match self.s.get(self.pos) {
            Some(&q @ (b'\'' | b'"')) => q,
            _ => return Err(npy_err("malformed header: expected a string")),
        };
        let start = self.pos + 1;
        let len = self.s[start..]
            .iter()
            .position(|&b| b == quote)
            .ok_or_else(|| npy_err("malformed header: unterminated string"))?;
        self.pos = start + len + 1;
        Ok(String::from_utf8_lossy(&self.s[start..start + len]).into_owned())
    }

    fn literal(&mut self) -> Result<Lit, Error> {
        self.skip_ws();
        let rest = &self.s[self.pos..];
        if rest.starts_with(b"True") {
            self.pos += 4;
            Ok(Lit::Bool(true))
        } else if rest.starts_with(b"False") {
            self.pos += 5;
            Ok(Lit::Bool(false))
        } else if self.try_eat(b'(') {
            self.tuple().map(Lit::Tuple)
        } else if self.s.get(self.pos) == Some(&b'[') {
            // A list descr describes a structured dtype.
            Err(npy_err("unsupported dtype (structured or sub-array)"))
        } else {
            self.string().map(Lit::Str)
        }
    }

    /// The rest of a tuple of non-negative integers after `(`.
    fn tuple(&mut self) -> Result<Vec<usize>, Error> {
        let mut items = Vec::new();
        let mut trailing_comma = false;
        while !self.try_eat(b')') {
            let start = self.pos;
            while self.s.get(self.pos).is_some_and(u8::is_ascii_digit) {
                self.pos += 1;
            }
            let digits = std::str::from_utf8(&self.s[start..self.pos]).unwrap_or("");
            if digits.is_empty() {
                return Err(npy_err(
                    "malformed header: shape must be a tuple of non-negative integers",
                ));
            }
            let d = digits
                .parse()
                .map_err(|_| npy_err(format!("array too large (dimension {digits})")))?;
            items.push(d);
            trailing_comma = self.try_eat(b',');
            if !trailing_comma {
                self.eat(b')')?;
                break;
            }
        }
        // `(3)` is the integer 3 in Python, not a tuple.
        if items.len() == 1 && !trailing_comma {
            return Err(npy_err("malformed header: shape must be a tuple"));
        }
        Ok(items)
    }
}
