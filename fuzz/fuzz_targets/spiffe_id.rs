//! Fuzzes the SPIFFE ID and trust domain parsers: they must never panic, and whatever they
//! accept must display as exactly the input (no normalisation; docs/security.md, "SPIFFE IDs").

#![no_main]

use hopgate_config::{SpiffeId, TrustDomain};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &str| {
    if let Ok(id) = SpiffeId::parse(input) {
        assert_eq!(id.to_string(), input);
        assert_eq!(id.trust_domain().as_str(), id.trust_domain_name());
        assert_eq!(SpiffeId::parse(id.as_str()).as_ref(), Ok(&id));
    }
    if let Ok(td) = TrustDomain::parse(input) {
        assert_eq!(td.as_str(), input);
        assert!(SpiffeId::parse(&td.id_string()).is_ok_and(|id| id.is_root()));
    }
});
