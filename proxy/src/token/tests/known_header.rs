//! Known header segments (`known_header.rs`): a minter's repeated header is parsed once, and a
//! verifier that has seen it decides every token exactly as one that has not.

use proptest::prelude::*;

use super::{Mesh, request, spiffe};
use crate::token::test_support::{INFERENCE, now, present};
use crate::token::{RejectReason, sha256};

#[test]
fn a_minters_second_token_reuses_its_parsed_header_and_still_hashes_as_a_whole() {
    let mesh = Mesh::new();
    let minter = Mesh::minter(&mesh.agent);
    let verifier = mesh.verifier(INFERENCE);
    let aud = spiffe(INFERENCE);
    for _ in 0..3 {
        let token = minter.mint_at(request(&aud, &[]), now()).unwrap();
        let verified = present(&verifier, token.compact(), &mesh.agent, now()).unwrap();
        assert_eq!(*verified.hash(), sha256(token.compact().as_bytes()));
    }
    assert_eq!(verifier.known_headers(), 1, "one minter, one header");
}

/// Flips the byte at `at` (modulo the token's length) to `to`, staying within the alphabet.
fn mutated(token: &str, at: usize, to: u8) -> String {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";
    let mut bytes = token.as_bytes().to_vec();
    let at = at % bytes.len();
    bytes[at] = alphabet[usize::from(to) % alphabet.len()];
    String::from_utf8(bytes).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A verifier warmed with the minter's header and a fresh one give the same outcome for
    /// any one-byte change anywhere in a token: in the header (another segment, parsed
    /// afresh), the payload or the signature.
    #[test]
    fn a_warm_verifier_decides_every_changed_token_as_a_cold_one_does(at in 0usize..4096, to in any::<u8>()) {
        let mesh = Mesh::new();
        let minter = Mesh::minter(&mesh.agent);
        let aud = spiffe(INFERENCE);
        let warm = mesh.verifier(INFERENCE);
        let seen = minter.mint_at(request(&aud, &[]), now()).unwrap();
        present(&warm, seen.compact(), &mesh.agent, now()).unwrap();
        let token = minter.mint_at(request(&aud, &[]), now()).unwrap();
        let changed = mutated(token.compact(), at, to);
        let cold = mesh.verifier(INFERENCE);
        let outcome = |v| present(v, &changed, &mesh.agent, now()).map(|t| *t.hash());
        let (w, c): (Result<[u8; 32], RejectReason>, _) = (outcome(&warm), outcome(&cold));
        prop_assert_eq!(w, c);
    }
}
