//! No spelling of a priced path reaches the upstream unpaid.

mod common;

use common::*;

#[tokio::test]
async fn every_spelling_of_a_priced_path_is_priced() {
    let rig = Rig::start().await;
    for spelling in [
        "/paid",
        "/PAID",
        "/Paid/",
        "//paid",
        "/./paid",
        "/x/../paid",
        "/free/../paid",
        "/free/..%2fpaid",
        "/free%2f..%2fpaid",
        "/free/%2e%2e/paid",
        "/free/%252e%252e/paid",
        "/%70aid",
        "/paid;jsessionid=1",
        "/paid?free=1",
        "/free/..\\paid",
        "/paid%0a",
        "/paid%0d%0a",
        "/paid%20",
        "/paid%00",
    ] {
        let r = rig.http.get(rig.url(spelling)).send().await.unwrap();
        assert_eq!(r.status(), 402, "{spelling} must be priced");
    }
    // HEAD mirrors GET, so it is priced too.
    let r = rig.http.head(rig.url("/paid")).send().await.unwrap();
    assert_eq!(r.status(), 402);
    assert_eq!(rig.upstream_hits().await, 0);
    // The free prefix still serves what is really under it.
    assert_eq!(
        rig.http
            .get(rig.url("/free/paid"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}
