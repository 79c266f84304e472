//! Smoke test: an own pool bounds concurrent tasks and every token comes back.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_pool_bounds_tasks_and_balances() {
    for fifo in [false, true] {
        let server = if fifo {
            jobserver_tokio::Server::new_fifo(3).unwrap()
        } else {
            jobserver_tokio::Server::new(3).unwrap()
        };
        assert_eq!(server.available().unwrap(), 2);
        let client = server.client().unwrap();
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..12 {
            let (client, running, peak) = (client.clone(), running.clone(), peak.clone());
            tasks.push(tokio::spawn(async move {
                let token = client.acquire().await.unwrap();
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                drop(token);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 3, "fifo={fifo}");
        let stats = client.stats();
        assert_eq!(stats.bytes_held, 0);
        assert_eq!(stats.bytes_read, stats.bytes_written);
        drop(client);
        let report = server.shutdown().unwrap();
        assert!(report.is_balanced(), "{report}");
    }
}
