//! The PKI builder of every hopgate test: `hopgate_proxy::test_util::pki` (the `test-util`
//! feature), generated per test with rcgen.

pub(crate) use hopgate_proxy::test_util::pki::*;
