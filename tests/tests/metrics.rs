//! Wait-time metrics and peaks, measured by the driver.

mod fixture;

use std::time::Duration;

use fixture::within;
use jobserver_io::{Client, Server};
use jobserver_tests::Driver;

jobserver_tests::conformance!(
    a_token_free_at_once_counts_as_no_wait,
    a_wait_is_timed_and_peaks_are_kept,
    a_request_that_cannot_be_met_counts_as_failed,
);

fn a_token_free_at_once_counts_as_no_wait<D: Driver>() {
    D::block_on(async {
        let server = Server::<D>::new(2).expect("server");
        let client = server.client().expect("client");
        let t = within("token", client.acquire()).await.expect("token");
        let m = client.metrics();
        assert_eq!((m.granted, m.waited, m.failed), (1, 0, 0), "{m:?}");
        assert_eq!(m.max_wait, Duration::ZERO);
        assert_eq!(m.mean_wait(), None);
        drop(t);
    });
}

fn a_wait_is_timed_and_peaks_are_kept<D: Driver>() {
    D::block_on(async {
        let server = Server::<D>::new(2).expect("server");
        let client = server.client().expect("client");
        let held = within("both", client.acquire_many(2)).await.expect("both");
        let waiter = {
            let client = client.clone();
            D::spawn(async move { client.acquire().await.map(|t| t.units()) })
        };
        // Let the waiter queue up, then free a unit after a known delay.
        std::thread::sleep(Duration::from_millis(150));
        drop(held);
        let units = within("waiter", waiter).await.expect("granted");
        assert_eq!(units, 1);
        let m = client.metrics();
        assert_eq!((m.granted, m.waited), (2, 1), "{m:?}");
        assert!(m.max_wait >= Duration::from_millis(100), "{m:?}");
        assert_eq!(m.mean_wait(), Some(m.max_wait));
        assert_eq!(m.peak_units, 2, "{m:?}");
        assert_eq!(m.peak_waiting, 1, "{m:?}");
    });
}

fn a_request_that_cannot_be_met_counts_as_failed<D: Driver>() {
    D::block_on(async {
        let client = Client::<D>::implicit_only(None);
        assert!(within("two", client.acquire_many(2)).await.is_err());
        let m = client.metrics();
        assert_eq!((m.granted, m.failed), (0, 1), "{m:?}");
    });
}
