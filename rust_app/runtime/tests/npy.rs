//! .npy reading and writing, against files written by numpy (tests/data/npy).

use std::io::{Cursor, Read};
use std::path::PathBuf;

use wasmforge_runtime::npy::{self, Header};
use wasmforge_runtime::{DType, Error};

fn file(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/npy").join(name);
    std::fs::read(&path).unwrap()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn npy_err(bytes: &[u8]) -> String {
    match npy::read_header(&mut Cursor::new(bytes)) {
        Err(Error::Npy(m)) => m,
        other => panic!("expected an npy error, got {other:?}"),
    }
}

/// A v1 file with `dict` as its header.
fn with_dict(dict: &str) -> Vec<u8> {
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    b.extend_from_slice(dict.as_bytes());
    b
}

#[test]
fn reads_numpy_files_of_every_version() {
    let expected = f32_bytes(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    for name in ["f32_2x3_v1.npy", "f32_2x3_v2.npy", "f32_2x3_v3.npy"] {
        let data = npy::read_expected(&mut Cursor::new(file(name)), DType::F32, &[2, 3]).unwrap();
        assert_eq!(data, expected, "{name}");
    }
}

#[test]
fn reads_headers_of_other_dtypes() {
    let cases: [(&str, DType, &[usize]); 4] = [
        ("i8_4.npy", DType::I8, &[4]),
        ("bool_3.npy", DType::Bool, &[3]),
        ("f16_scalar.npy", DType::F16, &[]),
        ("u64_1x0.npy", DType::U64, &[1, 0]),
    ];
    for (name, dtype, shape) in cases {
        let bytes = file(name);
        let mut r = Cursor::new(&bytes);
        assert_eq!(
            npy::read_header(&mut r).unwrap(),
            Header { dtype, shape: shape.to_vec() },
            "{name}"
        );
        let data =
            npy::read_data(&mut r, shape.iter().product::<usize>() * dtype.itemsize()).unwrap();
        // Writing the same array gives numpy's bytes exactly.
        let mut out = Vec::new();
        npy::write(&mut out, dtype, shape, &data).unwrap();
        assert_eq!(out, bytes, "{name}");
    }
}

#[test]
fn write_then_read_round_trips() {
    let data = f32_bytes(&[1.5, -2.0, 3.25]);
    let mut out = Vec::new();
    npy::write(&mut out, DType::F32, &[1, 3], &data).unwrap();
    assert_eq!(out, {
        let mut numpy = file("f32_2x3_v1.npy");
        numpy.truncate(128);
        let mut expected = numpy[..10].to_vec();
        expected.extend_from_slice(b"{'descr': '<f4', 'fortran_order': False, 'shape': (1, 3), }");
        expected.resize(127, b' ');
        expected.push(b'\n');
        expected.extend_from_slice(&data);
        expected
    });
    assert_eq!(out.len() - data.len(), 128, "data starts on a 64-byte boundary");
    assert_eq!(npy::read_expected(&mut Cursor::new(&out), DType::F32, &[1, 3]).unwrap(), data);
    // A size mismatch between data and shape is refused.
    assert!(npy::write(&mut Vec::new(), DType::F32, &[2, 3], &data).is_err());
}

#[test]
fn unsupported_arrays_are_refused() {
    let cases = [
        ("bad_big_endian.npy", "big-endian arrays are not supported ('>f4')"),
        ("bad_fortran.npy", "Fortran-order arrays are not supported"),
        ("bad_object.npy", "object arrays are not supported"),
        ("bad_complex.npy", "unsupported dtype '<c8'"),
        ("bad_structured.npy", "unsupported dtype (structured or sub-array)"),
    ];
    for (name, expected) in cases {
        let msg = npy_err(&file(name));
        assert!(msg.contains(expected), "{name}: {msg}");
    }
}

#[test]
fn malformed_headers_are_refused() {
    assert_eq!(npy_err(b""), "not a .npy file (bad magic)");
    assert_eq!(npy_err(b"PK\x03\x04 a zip file"), "not a .npy file (bad magic)");
    assert_eq!(npy_err(b"\x93NUMPY"), "truncated .npy header");
    assert_eq!(npy_err(b"\x93NUMPY\x01\x00\x40"), "truncated .npy header");
    assert_eq!(npy_err(b"\x93NUMPY\x01\x00\x40\x00{'descr'"), "truncated .npy header");
    assert_eq!(npy_err(b"\x93NUMPY\x04\x00\x00\x00"), "unsupported .npy format version 4.0");
    // A huge declared header length is refused before anything is allocated.
    assert!(npy_err(b"\x93NUMPY\x02\x00\xff\xff\xff\xff").contains("too long"));
    let cases = [
        ("{'descr': '<f4', 'shape': (2,), }", "needs keys"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 'y'}", "unexpected key 'x'"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (2), }", "shape must be a tuple"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }", "non-negative integers"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (2,, }", "non-negative integers"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3 }", "expected ')'"),
        ("{'descr': '<f4', 'fortran_order': 0, 'shape': (2,), }", "expected a string"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (2,) ", "expected '}'"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), } x", "data after the dict"),
        ("{'descr': '<f4, 'fortran_order': False, 'shape': (2,), }", "malformed header"),
        ("{'descr': '>u2', 'fortran_order': False, 'shape': (2,), }", "big-endian"),
        ("{'descr': '|f4', 'fortran_order': False, 'shape': (2,), }", "unsupported dtype '|f4'"),
        ("{'descr': '<f3', 'fortran_order': False, 'shape': (2,), }", "unsupported dtype '<f3'"),
        ("{'descr': '', 'fortran_order': False, 'shape': (2,), }", "unsupported dtype ''"),
    ];
    for (dict, expected) in cases {
        let msg = npy_err(&with_dict(dict));
        assert!(msg.contains(expected), "{dict}: {msg}");
    }
}

#[test]
fn huge_declared_shapes_are_refused() {
    // Overflows usize: refused by the header reader itself.
    let dict =
        "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4294967296), }";
    assert!(npy_err(&with_dict(dict)).contains("array too large"));
    let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,), }";
    assert!(npy_err(&with_dict(dict)).contains("array too large"));
    // Big but representable: refused by the comparison with the expected
    // shape, before any data is read or allocated.
    let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000,), }";
    let err = npy::read_expected(&mut Cursor::new(with_dict(dict)), DType::F32, &[2]).unwrap_err();
    assert_eq!(err, Error::Input("expected float32 [2], got float32 [1000000000000]".into()));
}

#[test]
fn dtype_and_shape_mismatches_name_both() {
    let err = npy::read_expected(&mut Cursor::new(file("f32_2x3_v1.npy")), DType::F64, &[1, 2, 3])
        .unwrap_err();
    assert_eq!(err, Error::Input("expected float64 [1, 2, 3], got float32 [2, 3]".into()));
}

#[test]
fn data_must_be_complete_and_alone() {
    let mut bytes = file("f32_2x3_v1.npy");
    bytes.pop();
    let err = npy::read_expected(&mut Cursor::new(&bytes), DType::F32, &[2, 3]).unwrap_err();
    assert_eq!(err, Error::Npy("truncated array data: expected 24 bytes, got 23".into()));
    bytes.extend_from_slice(b"\0\0");
    let err = npy::read_expected(&mut Cursor::new(&bytes), DType::F32, &[2, 3]).unwrap_err();
    assert_eq!(err, Error::Npy("unexpected data after the array".into()));
}

/// A reader that hands out one byte at a time, like a slow pipe.
struct Trickle<'a>(&'a [u8]);

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let Some((&b, rest)) = self.0.split_first() else {
            return Ok(0);
        };
        if buf.is_empty() {
            return Ok(0);
        }
        buf[0] = b;
        self.0 = rest;
        Ok(1)
    }
}

#[test]
fn short_reads_are_fine() {
    let bytes = file("f32_2x3_v2.npy");
    let data = npy::read_expected(&mut Trickle(&bytes), DType::F32, &[2, 3]).unwrap();
    assert_eq!(data, f32_bytes(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]));
}
