//! A read the runtime would refuse for now does not make the driver spin. tokio's cooperative
//! budget, once spent, makes `AsyncFd::poll_read_ready` return `Pending` and wake the waker at
//! once (outside its worker threads), which `Reactor::poll_read` must not do: the driver would
//! read again at once, for ever. The tokio adapter polls the readiness outside the budget.
//! Without that, a non-blocking multi-token try on an empty pool, made after 128 successful
//! ones inside one poll of `block_on`, never returned.
//!
//! Runs for every driver (only tokio has such a budget; the others must simply pass).

mod fixture;

use std::time::Duration;

use fixture::{within, Kind, Pool};
use jobserver_tests::Driver;

jobserver_tests::conformance!(spent_budget_does_not_spin);

fn spent_budget_does_not_spin<D: Driver>() {
    // On a thread of its own, so that a spin fails the test instead of hanging it.
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let outcome = std::panic::catch_unwind(|| tries_on_a_spent_budget::<D>());
        let _ = done.send(outcome.map_err(|_| ()));
    });
    match finished.recv_timeout(Duration::from_secs(60)) {
        Ok(Ok(())) => {}
        Ok(Err(())) => panic!("{}: the tries panicked (see above)", D::NAME),
        Err(_) => panic!("{}: a try on a spent budget spun for 60 s", D::NAME),
    }
}

fn tries_on_a_spent_budget<D: Driver>() {
    D::block_on(async {
        let pool = Pool::<D>::new(Kind::Pipe);
        let client = pool.client();
        let implicit = within("implicit slot", client.acquire())
            .await
            .expect("implicit");
        // Spend tokio's budget (128 operations that made progress) in one poll of this
        // future: each multi-token try goes through the machine, whose read finds the two
        // bytes put there; they go back on release and are taken out again.
        for i in 0..200 {
            pool.put(b"++");
            let token = client
                .try_acquire_many(2)
                .expect("try_acquire_many")
                .unwrap_or_else(|| panic!("try {i}: two bytes are in the pool"));
            drop(token);
            assert_eq!(pool.take(2), b"++", "try {i}: both went back");
        }
        // Then tries on the empty pool, still in the same poll: the budget is spent, so the
        // readiness wait is refused (and its waker woken at once) every time.
        for i in 0..100 {
            let got = client.try_acquire_many(2).expect("try_acquire_many");
            assert!(got.is_none(), "try {i}: the pool is empty");
        }
        // The driver still works afterwards: a byte put in the pool is found.
        pool.put(b"+");
        let token = within("a waiting acquire", client.acquire())
            .await
            .expect("the byte");
        drop(token);
        drop(implicit);
        assert_eq!(pool.drain_sorted(), b"+", "no token lost");
    });
}
