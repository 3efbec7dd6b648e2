//! Known-answer tests of the crypto interface over the host backend: every
//! cipher the data channel uses, HKDF, TLS 1.3's HKDF-Expand-Label and
//! OpenVPN's epoch key schedule, each from its published source.
//!
//! Vectors are copied as hex from the sources named beside them:
//! - GCM: D. McGrew, J. Viega, "The Galois/Counter Mode of Operation (GCM)",
//!   Appendix B "AES Test Vectors" (test case numbers as there);
//! - ChaCha20-Poly1305: RFC 8439 §2.8.2 and Appendix A.5;
//! - HKDF: RFC 5869 Appendix A.1–A.3;
//! - HKDF-Expand-Label: RFC 8448 §3 ("Simple 1-RTT Handshake");
//! - OpenVPN epoch keys: a real OpenVPN 2.7.6 session, as recorded in the
//!   project's reference `ovpn-dco-interface.md` ("Wire format").

#![cfg(not(windows))]

use ovpn_dco::crypto::host::HostCrypto;
use ovpn_dco::crypto::kdf::{self, OVPN_LABEL_PREFIX, TLS13_LABEL_PREFIX};
use ovpn_dco::crypto::{AeadKey, Cipher, CryptoError, CryptoProvider, NONCE_LEN, Nonce, TAG_LEN, Tag};

/// Decodes hex, ignoring whitespace (so vectors keep their source's line
/// breaks).
fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert!(digits.len() % 2 == 0, "odd hex length");
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).expect("hex digit"))
        .collect()
}

fn nonce(s: &str) -> Nonce {
    hex(s).try_into().expect("12-byte nonce")
}

fn tag(s: &str) -> Tag {
    hex(s).try_into().expect("16-byte tag")
}

struct AeadVector {
    name: &'static str,
    cipher: Cipher,
    key: &'static str,
    nonce: &'static str,
    ad: &'static str,
    plaintext: &'static str,
    ciphertext: &'static str,
    tag: &'static str,
}

/// Seals and opens `v` in place and out of place, then checks that a flipped
/// bit anywhere in tag, ciphertext or AD fails authentication.
fn check(v: &AeadVector) {
    let key = HostCrypto.new_key(v.cipher, &hex(v.key)).unwrap_or_else(|e| panic!("{}: {e:?}", v.name));
    let n = nonce(v.nonce);
    let ad = hex(v.ad);
    let pt = hex(v.plaintext);
    let ct = hex(v.ciphertext);
    let want_tag = tag(v.tag);
    assert_eq!(pt.len(), ct.len(), "{}: vector lengths", v.name);

    // Seal, out of place: the input is only read.
    let mut out = vec![0u8; pt.len()];
    let mut t = [0u8; TAG_LEN];
    key.seal(&n, &ad, &pt, &mut out, &mut t).unwrap();
    assert_eq!(out, ct, "{}: seal ciphertext", v.name);
    assert_eq!(t, want_tag, "{}: seal tag", v.name);

    // Seal, in place.
    let mut buf = pt.clone();
    let mut t = [0u8; TAG_LEN];
    key.seal_in_place(&n, &ad, &mut buf, &mut t).unwrap();
    assert_eq!(buf, ct, "{}: seal_in_place ciphertext", v.name);
    assert_eq!(t, want_tag, "{}: seal_in_place tag", v.name);

    // Open, out of place and in place.
    let mut out = vec![0u8; ct.len()];
    key.open(&n, &ad, &ct, &mut out, &want_tag).unwrap();
    assert_eq!(out, pt, "{}: open", v.name);
    let mut buf = ct.clone();
    key.open_in_place(&n, &ad, &mut buf, &want_tag).unwrap();
    assert_eq!(buf, pt, "{}: open_in_place", v.name);

    // Tampering: every flipped bit is an authentication failure, and no
    // plaintext is left behind (not checkable for an all-zero plaintext,
    // which is what a wiped buffer holds).
    let plaintext_visible = pt.iter().any(|&b| b != 0);
    let rejects = |ad: &[u8], ct: &[u8], t: &Tag, what: &str| {
        let mut out = vec![0u8; ct.len()];
        assert_eq!(key.open(&n, ad, ct, &mut out, t), Err(CryptoError::AuthFailed), "{}: {what} (open)", v.name);
        if plaintext_visible {
            assert_ne!(out, pt, "{}: {what} left plaintext (open)", v.name);
        }
        let mut buf = ct.to_vec();
        assert_eq!(
            key.open_in_place(&n, ad, &mut buf, t),
            Err(CryptoError::AuthFailed),
            "{}: {what} (open_in_place)",
            v.name
        );
        if plaintext_visible {
            assert_ne!(buf, pt, "{}: {what} left plaintext (open_in_place)", v.name);
        }
    };
    for bit in [0, 7, TAG_LEN * 8 - 1] {
        let mut t = want_tag;
        t[bit / 8] ^= 1 << (bit % 8);
        rejects(&ad, &ct, &t, "flipped tag bit");
    }
    if !ct.is_empty() {
        for byte in [0, ct.len() - 1] {
            let mut bad = ct.clone();
            bad[byte] ^= 0x80;
            rejects(&ad, &bad, &want_tag, "flipped ciphertext bit");
        }
    }
    if ad.is_empty() {
        rejects(&[0], &ct, &want_tag, "added AD byte");
    } else {
        for byte in [0, ad.len() - 1] {
            let mut bad = ad.clone();
            bad[byte] ^= 0x01;
            rejects(&bad, &ct, &want_tag, "flipped AD bit");
        }
    }
    // A different nonce must not verify either.
    let mut other = n;
    other[NONCE_LEN - 1] ^= 1;
    let mut buf = ct.clone();
    assert_eq!(key.open_in_place(&other, &ad, &mut buf, &want_tag), Err(CryptoError::AuthFailed), "{}: nonce", v.name);
}

// GCM spec, Appendix B: the shared inputs of test cases 3/4, 9/10, 15/16.
const GCM_IV: &str = "cafebabefacedbaddecaf888";
const GCM_AD: &str = "feedfacedeadbeeffeedfacedeadbeef abaddad2";
const GCM_P64: &str = "d9313225f88406e5a55909c5aff5269a 86a7a9531534f7da2e4c303d8a318a72
                       1c3c0c95956809532fcf0e2449a6b525 b16aedf5aa0de657ba637b391aafd255";
const GCM_P60: &str = "d9313225f88406e5a55909c5aff5269a 86a7a9531534f7da2e4c303d8a318a72
                       1c3c0c95956809532fcf0e2449a6b525 b16aedf5aa0de657ba637b39";

#[test]
fn aes_128_gcm_matches_the_gcm_spec() {
    let k = "feffe9928665731c6d6a8f9467308308";
    for v in [
        AeadVector {
            name: "GCM test case 2",
            cipher: Cipher::AesGcm,
            key: "00000000000000000000000000000000",
            nonce: "000000000000000000000000",
            ad: "",
            plaintext: "00000000000000000000000000000000",
            ciphertext: "0388dace60b6a392f328c2b971b2fe78",
            tag: "ab6e47d42cec13bdf53a67b21257bddf",
        },
        AeadVector {
            name: "GCM test case 3",
            cipher: Cipher::AesGcm,
            key: k,
            nonce: GCM_IV,
            ad: "",
            plaintext: GCM_P64,
            ciphertext: "42831ec2217774244b7221b784d0d49c e3aa212f2c02a4e035c17e2329aca12e
                         21d514b25466931c7d8f6a5aac84aa05 1ba30b396a0aac973d58e091473f5985",
            tag: "4d5c2af327cd64a62cf35abd2ba6fab4",
        },
        AeadVector {
            name: "GCM test case 4",
            cipher: Cipher::AesGcm,
            key: k,
            nonce: GCM_IV,
            ad: GCM_AD,
            plaintext: GCM_P60,
            ciphertext: "42831ec2217774244b7221b784d0d49c e3aa212f2c02a4e035c17e2329aca12e
                         21d514b25466931c7d8f6a5aac84aa05 1ba30b396a0aac973d58e091",
            tag: "5bc94fbc3221a5db94fae95ae7121a47",
        },
    ] {
        check(&v);
    }
}

#[test]
fn aes_192_gcm_matches_the_gcm_spec() {
    let k = "feffe9928665731c6d6a8f9467308308 feffe9928665731c";
    for v in [
        AeadVector {
            name: "GCM test case 8",
            cipher: Cipher::AesGcm,
            key: "00000000000000000000000000000000 0000000000000000",
            nonce: "000000000000000000000000",
            ad: "",
            plaintext: "00000000000000000000000000000000",
            ciphertext: "98e7247c07f0fe411c267e4384b0f600",
            tag: "2ff58d80033927ab8ef4d4587514f0fb",
        },
        AeadVector {
            name: "GCM test case 9",
            cipher: Cipher::AesGcm,
            key: k,
            nonce: GCM_IV,
            ad: "",
            plaintext: GCM_P64,
            ciphertext: "3980ca0b3c00e841eb06fac4872a2757 859e1ceaa6efd984628593b40ca1e19c
                         7d773d00c144c525ac619d18c84a3f47 18e2448b2fe324d9ccda2710acade256",
            tag: "9924a7c8587336bfb118024db8674a14",
        },
        AeadVector {
            name: "GCM test case 10",
            cipher: Cipher::AesGcm,
            key: k,
            nonce: GCM_IV,
            ad: GCM_AD,
            plaintext: GCM_P60,
            ciphertext: "3980ca0b3c00e841eb06fac4872a2757 859e1ceaa6efd984628593b40ca1e19c
                         7d773d00c144c525ac619d18c84a3f47 18e2448b2fe324d9ccda2710",
            tag: "2519498e80f1478f37ba55bd6d27618c",
        },
    ] {
        check(&v);
    }
}

#[test]
fn aes_256_gcm_matches_the_gcm_spec() {
    let k = "feffe9928665731c6d6a8f9467308308 feffe9928665731c6d6a8f9467308308";
    for v in [
        AeadVector {
            name: "GCM test case 14",
            cipher: Cipher::AesGcm,
            key: "00000000000000000000000000000000 00000000000000000000000000000000",
            nonce: "000000000000000000000000",
            ad: "",
            plaintext: "00000000000000000000000000000000",
            ciphertext: "cea7403d4d606b6e074ec5d3baf39d18",
            tag: "d0d1c8a799996bf0265b98b5d48ab919",
        },
        AeadVector {
            name: "GCM test case 15",
            cipher: Cipher::AesGcm,
            key: k,
            nonce: GCM_IV,
            ad: "",
            plaintext: GCM_P64,
            ciphertext: "522dc1f099567d07f47f37a32a84427d 643a8cdcbfe5c0c97598a2bd2555d1aa
                         8cb08e48590dbb3da7b08b1056828838 c5f61e6393ba7a0abcc9f662898015ad",
            tag: "b094dac5d93471bdec1a502270e3cc6c",
        },
        AeadVector {
            name: "GCM test case 16",
            cipher: Cipher::AesGcm,
            key: k,
            nonce: GCM_IV,
            ad: GCM_AD,
            plaintext: GCM_P60,
            ciphertext: "522dc1f099567d07f47f37a32a84427d 643a8cdcbfe5c0c97598a2bd2555d1aa
                         8cb08e48590dbb3da7b08b1056828838 c5f61e6393ba7a0abcc9f662",
            tag: "76fc6ece0f4e1768cddf8853bb2d551b",
        },
    ] {
        check(&v);
    }
}

#[test]
fn chacha20_poly1305_matches_rfc8439() {
    check(&AeadVector {
        name: "RFC 8439 §2.8.2",
        cipher: Cipher::ChaCha20Poly1305,
        key: "808182838485868788898a8b8c8d8e8f 909192939495969798999a9b9c9d9e9f",
        // 32-bit fixed-common part 07000000 ‖ IV 4041424344454647
        nonce: "07000000 4041424344454647",
        ad: "50515253c0c1c2c3c4c5c6c7",
        plaintext: "4c616469657320616e642047656e746c 656d656e206f662074686520636c6173
                    73206f66202739393a20496620492063 6f756c64206f6666657220796f75206f
                    6e6c79206f6e652074697020666f7220 746865206675747572652c2073756e73
                    637265656e20776f756c642062652069 742e",
        ciphertext: "d31a8d34648e60db7b86afbc53ef7ec2 a4aded51296e08fea9e2b5a736ee62d6
                     3dbea45e8ca9671282fafb69da92728b 1a71de0a9e060b2905d6a5b67ecd3b36
                     92ddbd7f2d778b8c9803aee328091b58 fab324e4fad675945585808b4831d7bc
                     3ff4def08e4b7a9de576d26586cec64b 6116",
        tag: "1ae10b594f09e26a7e902ecbd0600691",
    });
    check(&AeadVector {
        name: "RFC 8439 A.5",
        cipher: Cipher::ChaCha20Poly1305,
        key: "1c9240a5eb55d38af333888604f6b5f0 473917c1402b80099dca5cbc207075c0",
        nonce: "000000000102030405060708",
        ad: "f33388860000000000004e91",
        plaintext: "496e7465726e65742d44726166747320 61726520647261667420646f63756d65
                    6e74732076616c696420666f72206120 6d6178696d756d206f6620736978206d
                    6f6e74687320616e64206d6179206265 20757064617465642c207265706c6163
                    65642c206f72206f62736f6c65746564 206279206f7468657220646f63756d65
                    6e747320617420616e792074696d652e 20497420697320696e617070726f7072
                    6961746520746f2075736520496e7465 726e65742d4472616674732061732072
                    65666572656e6365206d617465726961 6c206f7220746f206369746520746865
                    6d206f74686572207468616e20617320 2fe2809c776f726b20696e2070726f67
                    726573732e2fe2809d",
        ciphertext: "64a0861575861af460f062c79be643bd 5e805cfd345cf389f108670ac76c8cb2
                     4c6cfc18755d43eea09ee94e382d26b0 bdb7b73c321b0100d4f03b7f355894cf
                     332f830e710b97ce98c8a84abd0b9481 14ad176e008d33bd60f982b1ff37c855
                     9797a06ef4f0ef61c186324e2b350638 3606907b6a7c02b0f9f6157b53c867e4
                     b9166c767b804d46a59b5216cde7a4e9 9040c5a40433225ee282a1b0a06c523e
                     af4534d7f83fa1155b0047718cbc546a 0d072b04b3564eea1b422273f548271a
                     0bb2316053fa76991955ebd63159434e cebb4e466dae5a1073a6727627097a10
                     49e617d91d361094fa68f0ff77987130 305beaba2eda04df997b714d6c6f2c29
                     a6ad5cb4022b02709b",
        tag: "eead9d67890cbb22392336fea1851f38",
    });
}

#[test]
fn the_section_2_8_2_plaintext_is_the_sunscreen_sentence() {
    // Guards the hex above against a slip: RFC 8439 prints it as text too.
    let pt = hex("4c616469657320616e642047656e746c 656d656e206f662074686520636c6173
                  73206f66202739393a20496620492063 6f756c64206f6666657220796f75206f
                  6e6c79206f6e652074697020666f7220 746865206675747572652c2073756e73
                  637265656e20776f756c642062652069 742e");
    assert_eq!(
        pt,
        b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it."
    );
}

#[test]
fn hkdf_expand_matches_rfc5869() {
    // (PRK, info, OKM) of RFC 5869 A.1, A.2, A.3: the expand step from the
    // PRK the RFC gives.
    let a2_info: Vec<u8> = (0xb0..=0xff).collect();
    let cases: [(&str, Vec<u8>, &str); 3] = [
        (
            "077709362c2e32df0ddc3f0dc47bba63 90b6c73bb50f9c3122ec844ad7c2b3e5",
            hex("f0f1f2f3f4f5f6f7f8f9"),
            "3cb25f25faacd57a90434f64d0362f2a 2d2d0a90cf1a5a4c5db02d56ecc4c5bf 34007208d5b887185865",
        ),
        (
            "06a6b88c5853361a06104c9ceb35b45c ef760014904671014a193f40c15fc244",
            a2_info,
            "b11e398dc80327a1c8e7f78c596a4934 4f012eda2d4efad8a050cc4c19afa97c
             59045a99cac7827271cb41c65e590e09 da3275600c2f09b8367793a9aca3db71
             cc30c58179ec3e87c14c01d5c1f3434f 1d87",
        ),
        (
            "19ef24a32c717b167f33a91d6f648bdf 96596776afdb6377ac434c1c293ccb04",
            Vec::new(),
            "8da4e775a563c18f715f802a063c5a31 b8a11f5c5ee1879ec3454e5f3c738d2d 9d201395faa4b61a96c8",
        ),
    ];
    for (i, (prk, info, okm)) in cases.iter().enumerate() {
        let want = hex(okm);
        let mut out = vec![0u8; want.len()];
        HostCrypto.hkdf_sha256_expand(&hex(prk), info, &mut out).unwrap();
        assert_eq!(out, want, "RFC 5869 A.{}", i + 1);
    }
}

#[test]
fn hkdf_output_longer_than_255_hashes_is_refused() {
    let mut out = vec![0u8; 255 * 32 + 1];
    assert_eq!(HostCrypto.hkdf_sha256_expand(&[0u8; 32], b"", &mut out), Err(CryptoError::BadLength));
}

#[test]
fn tls13_expand_label_matches_rfc8448_simple_handshake() {
    // RFC 8448 §3, '{server} derive secret "tls13 s hs traffic"': PRK is the
    // handshake secret, context the ClientHello..ServerHello hash.
    let handshake_secret = hex("1d c8 26 e9 36 06 aa 6f dc 0a ad c1 2f 74 1b 01
                                04 6a a6 b9 9f 69 1e d2 21 a9 f0 ca 04 3f be ac");
    let hello_hash = hex("86 0c 06 ed c0 78 58 ee 8e 78 f0 e7 42 8c 58 ed
                          d6 b4 3f 2c a3 e6 e9 5f 02 ed 06 3c f0 e1 ca d8");
    let mut server_hs_traffic = [0u8; 32];
    kdf::expand_label(
        &HostCrypto,
        &handshake_secret,
        TLS13_LABEL_PREFIX,
        b"s hs traffic",
        &hello_hash,
        &mut server_hs_traffic,
    )
    .unwrap();
    assert_eq!(
        server_hs_traffic.to_vec(),
        hex("b6 7b 7d 69 0c c1 6c 4e 75 e5 42 13 cb 2d 37 b4
             e9 c9 12 bc de d9 10 5d 42 be fd 59 d3 91 ad 38")
    );

    // RFC 8448 §3, "{server} derive write traffic keys for handshake data".
    let mut key = [0u8; 16];
    kdf::expand_label(&HostCrypto, &server_hs_traffic, TLS13_LABEL_PREFIX, b"key", b"", &mut key).unwrap();
    assert_eq!(key.to_vec(), hex("3f ce 51 60 09 c2 17 27 d0 f2 e4 e8 6e e4 03 bc"));
    let mut iv = [0u8; 12];
    kdf::expand_label(&HostCrypto, &server_hs_traffic, TLS13_LABEL_PREFIX, b"iv", b"", &mut iv).unwrap();
    assert_eq!(iv.to_vec(), hex("5d 31 3e b2 67 12 76 ee 13 00 0b 30"));
}

/// OpenVPN's keepalive ping payload (OpenVPN `ping.c`, ping_string).
const KEEPALIVE_PING: [u8; 16] =
    [0x2a, 0x18, 0x7b, 0xf3, 0x64, 0x1e, 0xb4, 0xcb, 0x07, 0xed, 0x2d, 0x0a, 0x98, 0x1f, 0xc7, 0x48];

/// Epoch-format packet layout: [hdr 4][packet id 8][ciphertext][tag 16].
const EPOCH_AD_LEN: usize = 12;
const EPOCH_PACKET_ID_RANGE: core::ops::Range<usize> = 4..12;

/// The epoch nonce: (8-byte packet id ‖ 00000000) XOR the implicit IV.
fn epoch_nonce(wire: &[u8], iv: &[u8; NONCE_LEN]) -> Nonce {
    let mut n = [0u8; NONCE_LEN];
    n[..8].copy_from_slice(&wire[EPOCH_PACKET_ID_RANGE]);
    for (b, i) in n.iter_mut().zip(iv) {
        *b ^= i;
    }
    n
}

/// Derives K_1 and IV_1 from E_1, checks them, and decrypts the captured
/// keepalive to the ping bytes.
fn check_epoch_session(cipher: Cipher, e1: &str, want_key: &str, want_iv: &str, wire: &str) -> Nonce {
    let e1: [u8; 32] = hex(e1).try_into().unwrap();
    let key = kdf::data_key(&HostCrypto, &e1, 32).unwrap();
    assert_eq!(key.as_bytes(), hex(want_key));
    let iv = kdf::data_iv(&HostCrypto, &e1).unwrap();
    assert_eq!(iv.to_vec(), hex(want_iv));

    let wire = hex(wire);
    assert_eq!(wire.len(), 44, "a keepalive is 44 bytes on the wire");
    let n = epoch_nonce(&wire, &iv);
    let (ad, rest) = wire.split_at(EPOCH_AD_LEN);
    let (ct, t) = rest.split_at(rest.len() - TAG_LEN);
    let t: Tag = t.try_into().unwrap();
    let aead = HostCrypto.new_key(cipher, key.as_bytes()).unwrap();

    let mut out = vec![0u8; ct.len()];
    aead.open(&n, ad, ct, &mut out, &t).unwrap();
    assert_eq!(out, KEEPALIVE_PING);
    let mut buf = ct.to_vec();
    aead.open_in_place(&n, ad, &mut buf, &t).unwrap();
    assert_eq!(buf, KEEPALIVE_PING);

    // Re-encrypting the ping reproduces the captured packet.
    let mut sealed = KEEPALIVE_PING;
    let mut sealed_tag = [0u8; TAG_LEN];
    aead.seal_in_place(&n, ad, &mut sealed, &mut sealed_tag).unwrap();
    assert_eq!(sealed.as_slice(), ct);
    assert_eq!(sealed_tag, t);

    // The peer-id/key-id header is authenticated.
    let mut bad_ad = ad.to_vec();
    bad_ad[3] ^= 1;
    let mut buf = ct.to_vec();
    assert_eq!(aead.open_in_place(&n, &bad_ad, &mut buf, &t), Err(CryptoError::AuthFailed));

    // The next epoch's keys differ from this one's.
    let e2 = kdf::next_epoch_secret(&HostCrypto, &e1).unwrap();
    assert_ne!(e2, e1);
    assert_ne!(kdf::data_key(&HostCrypto, &e2, 32).unwrap(), key);
    n
}

#[test]
fn openvpn_epoch_aes_256_gcm_keepalive_decrypts() {
    let n = check_epoch_session(
        Cipher::AesGcm,
        "d2ede5aa88ece3bab02fcda255b42f176544c777e6e102ffec5dc5d16b907e9a",
        "daa3e72fdd69e4c9722dc343e5302b1ec503465f36a3466b15283969908a6ee3",
        "26a042d34a89d91e50050bc3",
        "480000000001000000000005ab6174db06a3dd414aa8002e4a2197403aeeb6a61f3f80785fe62597b6b2bbd8",
    );
    assert_eq!(n, nonce("26a142d34a89d91b50050bc3"));
}

#[test]
fn openvpn_epoch_chacha20_poly1305_keepalive_decrypts() {
    check_epoch_session(
        Cipher::ChaCha20Poly1305,
        "e3817ac508afd53898a1870be7419a67f9abfa81f244716483c49e48bd42bc85",
        "e9fbfa6d3cb36e4fced269f46d6a43ecb40314f7edc6fcf278807957cf76d62e",
        "64fffccd8164a980dfe24965",
        "48000000000100000000000535c27d2b24813e5be085cc9a3953815b119f03de4ca6e32eba076e207697adaf",
    );
}

#[test]
fn epoch_labels_use_the_ovpn_prefix() {
    // The helpers are HKDF-Expand-Label with "ovpn " and an empty context.
    let e = [0x42u8; 32];
    let mut direct = [0u8; 12];
    kdf::expand_label(&HostCrypto, &e, OVPN_LABEL_PREFIX, b"data_iv", b"", &mut direct).unwrap();
    assert_eq!(kdf::data_iv(&HostCrypto, &e).unwrap(), direct);
}
