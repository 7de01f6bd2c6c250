use std::sync::Arc;
use std::time::Duration;

use hopgate_config::Address;
use tokio::sync::Notify;

use super::{Answer, Resolved};

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn an_ip_address_is_its_own_answer_without_a_lookup() {
    let resolved = Resolved::new(&Address::parse("10.0.0.5:8080").unwrap(), WAIT);
    let addrs = resolved.addrs(Duration::ZERO).await.unwrap();
    assert_eq!(*addrs, ["10.0.0.5:8080".parse().unwrap()]);
    assert_eq!(resolved.address().to_string(), "10.0.0.5:8080");
}

#[tokio::test]
async fn a_name_is_resolved_by_the_system_resolver_with_its_port() {
    let resolved = Resolved::new(&Address::parse("localhost:15006").unwrap(), WAIT);
    let addrs = resolved.addrs(WAIT).await.unwrap();
    assert!(!addrs.is_empty());
    assert!(
        addrs
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == 15006),
        "{addrs:?}"
    );
}

#[tokio::test]
async fn a_name_that_does_not_resolve_fails_with_an_error_naming_it() {
    let resolved = Resolved::new(&Address::parse("hopgate-nowhere.invalid:80").unwrap(), WAIT);
    let err = resolved.addrs(WAIT).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    let message = err.to_string();
    assert!(
        message.starts_with("`hopgate-nowhere.invalid:80` does not resolve: "),
        "{message}"
    );
    // Asked again, it is still an error, not a hang.
    assert!(resolved.addrs(Duration::ZERO).await.is_err());
}

#[tokio::test]
async fn a_connection_before_the_first_answer_waits_for_it_then_gives_up() {
    // A name whose lookup never finishes: the sender is held, nothing is ever sent.
    let (tx, answers) = tokio::sync::watch::channel(Answer::Pending);
    let resolved = Resolved {
        address: Arc::new(Address::parse("slow.example:80").unwrap()),
        answers,
        retry: Arc::new(Notify::new()),
    };
    let started = tokio::time::Instant::now();
    let err = resolved
        .addrs(Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(
        err.to_string(),
        "`slow.example:80` does not resolve: no answer from the resolver yet"
    );
    // The first answer, once in, is what the next connection gets.
    tx.send_replace(Answer::Addrs(Arc::from(["10.0.0.9:80".parse().unwrap()])));
    let addrs = resolved.addrs(Duration::ZERO).await.unwrap();
    assert_eq!(*addrs, ["10.0.0.9:80".parse().unwrap()]);
    assert!(
        resolved
            .resolves_to("10.0.0.9:80".parse().unwrap(), Duration::ZERO)
            .await
    );
    assert!(
        !resolved
            .resolves_to("10.0.0.9:81".parse().unwrap(), Duration::ZERO)
            .await
    );
}
