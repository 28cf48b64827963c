//! Just enough of the `.npy` format for the bench: version 1/2 headers,
//! C order, little-endian f32 / f64 / i64 / i32 / u8 / bool in, f32 out.

use std::fs;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::{bail, format_err};

fn field<'a>(header: &'a str, key: &str) -> TractResult<&'a str> {
    let at = header.find(key).ok_or_else(|| format_err!("npy header has no {key}"))?;
    Ok(header[at + key.len()..].trim_start_matches([' ', ':', '\'']))
}

pub fn read(path: &str) -> TractResult<Tensor> {
    let bytes = fs::read(path).map_err(|e| format_err!("{path}: {e}"))?;
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        bail!("{path}: not a .npy file");
    }
    let (len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        _ => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
    };
    let header = std::str::from_utf8(&bytes[start..start + len])?;
    if field(header, "'fortran_order'")?.starts_with("True") {
        bail!("{path}: Fortran order is not supported");
    }
    let descr = field(header, "'descr'")?;
    let descr = &descr[..descr.find('\'').unwrap_or(descr.len())];
    let shape_text = field(header, "'shape'")?;
    let shape_text = &shape_text[1..shape_text.find(')').unwrap_or(1)];
    let shape: Vec<usize> = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>())
        .collect::<Result<_, _>>()?;
    let data = &bytes[start + len..];
    let dt = match descr {
        "<f4" => f32::datum_type(),
        "<f8" => f64::datum_type(),
        "<i8" => i64::datum_type(),
        "<i4" => i32::datum_type(),
        "|u1" => u8::datum_type(),
        "|b1" => bool::datum_type(),
        other => bail!("{path}: dtype {other} is not supported"),
    };
    let count: usize = shape.iter().product();
    if data.len() != count * dt.size_of() {
        bail!("{path}: {} data bytes for shape {:?}", data.len(), shape);
    }
    Ok(unsafe { Tensor::from_raw_dt(dt, &shape, data)? })
}

pub fn write_f32(path: &str, tensor: &Tensor) -> TractResult<()> {
    let shape: Vec<String> = tensor.shape().iter().map(|d| format!("{d},")).collect();
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({}), }}", shape.join(" "));
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for value in tensor.as_slice::<f32>()? {
        out.extend_from_slice(&value.to_le_bytes());
    }
    fs::write(path, out).map_err(|e| format_err!("{path}: {e}"))?;
    Ok(())
}
