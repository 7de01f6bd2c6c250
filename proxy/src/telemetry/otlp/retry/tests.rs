//! Which failures are retried, how long the waits are, and what a collector may ask for.

use std::time::Duration;

use proptest::prelude::*;

use super::*;

/// A protobuf length-delimited field.
fn len_field(field: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![field << 3 | 2, u8::try_from(bytes.len()).unwrap()];
    out.extend_from_slice(bytes);
    out
}

/// A `google.rpc.Status` of `code` carrying a `RetryInfo` of `seconds` and `nanos`.
fn status_with_retry_info(code: u8, seconds: u8, nanos: u32) -> Vec<u8> {
    let mut duration = vec![1 << 3, seconds, 2 << 3];
    let mut n = nanos;
    loop {
        let byte = u8::try_from(n & 0x7f).unwrap();
        n >>= 7;
        if n == 0 {
            duration.push(byte);
            break;
        }
        duration.push(byte | 0x80);
    }
    let retry_info = len_field(1, &duration);
    let mut any = len_field(1, b"type.googleapis.com/google.rpc.RetryInfo");
    any.extend(len_field(2, &retry_info));
    let mut status = vec![1 << 3, code];
    status.extend(len_field(2, b"slow down"));
    status.extend(len_field(3, &any));
    status
}

#[test]
fn the_backoff_waits_about_100_then_200_ms_and_gives_up_after_three_tries() {
    for _ in 0..100 {
        let first = wait(1, None).unwrap();
        let second = wait(2, None).unwrap();
        assert!(
            first >= Duration::from_millis(50) && first <= Duration::from_millis(100),
            "{first:?}"
        );
        assert!(
            second >= Duration::from_millis(100) && second <= Duration::from_millis(200),
            "{second:?}"
        );
    }
    assert_eq!(wait(3, None), None);
    assert_eq!(wait(3, Some(Duration::from_millis(1))), None);
    // Jittered: not every sidecar waits the same.
    let waits: std::collections::BTreeSet<_> = (0..20).map(|_| wait(1, None)).collect();
    assert!(waits.len() > 1, "{waits:?}");
}

#[test]
fn a_delay_the_collector_asks_for_is_taken_as_it_is() {
    assert_eq!(
        wait(1, Some(Duration::from_secs(2))),
        Some(Duration::from_secs(2))
    );
}

#[test]
fn http_429_502_503_and_504_are_retried_and_other_answers_are_not() {
    for code in [429, 502, 503, 504] {
        assert!(
            http_retryable(http::StatusCode::from_u16(code).unwrap()),
            "{code}"
        );
    }
    for code in [400, 401, 403, 404, 413, 415, 500, 501] {
        assert!(
            !http_retryable(http::StatusCode::from_u16(code).unwrap()),
            "{code}"
        );
    }
}

#[test]
fn retry_after_in_seconds_is_read_and_a_date_or_garbage_is_not() {
    let mut headers = http::HeaderMap::new();
    assert_eq!(retry_after(&headers), None);
    headers.insert("retry-after", " 3 ".parse().unwrap());
    assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
    headers.insert(
        "retry-after",
        "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
    );
    assert_eq!(retry_after(&headers), None);
    headers.insert("retry-after", "-1".parse().unwrap());
    assert_eq!(retry_after(&headers), None);
}

#[test]
fn grpc_codes_are_retried_as_the_otlp_specification_says() {
    use tonic::Code;
    for code in [
        Code::Cancelled,
        Code::DeadlineExceeded,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unavailable,
        Code::DataLoss,
    ] {
        let failure = grpc(&tonic::Status::new(code, "x"));
        assert_eq!(failure.retry, Retry::Yes(None), "{code:?}");
    }
    for code in [
        Code::InvalidArgument,
        Code::Unauthenticated,
        Code::PermissionDenied,
        Code::Unimplemented,
        Code::Internal,
        Code::ResourceExhausted,
    ] {
        assert_eq!(
            grpc(&tonic::Status::new(code, "x")).retry,
            Retry::No,
            "{code:?}"
        );
    }
}

#[test]
fn resource_exhausted_with_a_retry_info_is_retried_after_its_delay() {
    let details = status_with_retry_info(8, 2, 500_000_000);
    assert_eq!(retry_info(&details), Some(Duration::from_millis(2_500)));
    let status =
        tonic::Status::with_details(tonic::Code::ResourceExhausted, "slow down", details.into());
    assert_eq!(
        grpc(&status).retry,
        Retry::Yes(Some(Duration::from_millis(2_500)))
    );
    assert_eq!(retry_info(b""), None);
    assert_eq!(retry_info(&[0xff]), None);
}

#[test]
fn a_tls_failure_is_never_retried_even_inside_an_io_error() {
    let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
    let io = std::io::Error::new(std::io::ErrorKind::InvalidData, tls);
    let failure = Failure::connection(&io);
    assert_eq!(failure.retry, Retry::No);
    assert!(
        failure.message.contains("invalid peer certificate"),
        "{}",
        failure.message
    );
    let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
    assert_eq!(Failure::connection(&refused).retry, Retry::Yes(None));
}

proptest! {
    #[test]
    fn any_status_details_are_read_without_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = retry_info(&bytes);
    }
}
