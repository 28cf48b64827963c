//! SHA-256 against the FIPS 180-4 / NIST example vectors, and lengths
//! around the padding boundaries (expected digests from Python's hashlib),
//! fed in one piece and in every split.

use wasmforge_runtime::sha256::{digest, hex, Sha256};

fn hex_digest(data: &[u8]) -> String {
    hex(&digest(data))
}

#[test]
fn nist_vectors() {
    let cases: [(&[u8], &str); 4] = [
        (b"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        (b"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        (
            b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
        ),
        (
            b"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopq\
              klmnopqrlmnopqrsmnopqrstnopqrstu",
            "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1",
        ),
    ];
    for (message, expected) in cases {
        assert_eq!(hex_digest(message), expected, "{:?}", String::from_utf8_lossy(message));
    }
}

#[test]
fn one_million_a_in_odd_pieces() {
    let mut h = Sha256::new();
    let chunk = [b'a'; 997];
    let mut left = 1_000_000;
    while left > 0 {
        let n = left.min(chunk.len());
        h.update(&chunk[..n]);
        left -= n;
    }
    assert_eq!(
        hex(&h.finish()),
        "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
    );
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| ((i * 7 + 3) % 251) as u8).collect()
}

#[test]
fn padding_boundaries_and_every_split() {
    let cases = [
        (55, "1deace58c745f3ecadde68a5923f494c3703fa73f0306483ccb898a5826e8d70"),
        (56, "06dbe23685750e4d3881ded95047abaf93fa8f9c5d3501dc57c717a72ff1398e"),
        (57, "011f4bced20a249afb834d24b3e4eca31ad5ea2bdd1d8a1a564c2d2410398e69"),
        (63, "47fb38b12335c9298d09280515c0666489a189d1554bb0ac1a0740806ce9d8b6"),
        (64, "dfa798724b1a8014994f363e5da7474ed26ce3757fb29e07aa47ad5a9352d37b"),
        (65, "dd2eab5a5507d7717c63ce953d9ac61752c21e664425ad1227054722a0d97f69"),
        (119, "c6e0f435df5d7d265baacca31e0602c00aa22fa6d3819aed664649294c743756"),
        (120, "17eb8960823a644bde3065620bb9d45931fe8993fd8eb692a17aff0fd725db6a"),
        (128, "3a9c1e22e20578eebe442238f431befd688bd56698eb7c77d95d3f97d8f58207"),
        (300, "36da72897e604580cf2b86856c904efddc5f84d90fa1766492cf6ccf35b97ddc"),
    ];
    for (n, expected) in cases {
        let data = pattern(n);
        assert_eq!(hex_digest(&data), expected, "length {n}");
        for split in 0..=n {
            let mut h = Sha256::new();
            h.update(&data[..split]);
            h.update(&[]);
            h.update(&data[split..]);
            assert_eq!(hex(&h.finish()), expected, "length {n} split at {split}");
        }
    }
}

#[test]
fn hex_is_lower_case() {
    assert_eq!(hex(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
}
