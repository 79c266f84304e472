//! Splitting a multi-unit token, merging tokens, and all-or-nothing `try_acquire_many`:
//! the bytes in the pipe (FIONREAD) are counted after every step.

mod fixture;

use fixture::within;
use jobserver_io::Server;
use jobserver_tests::Driver;

jobserver_tests::conformance!(
    split_units_go_back_one_at_a_time,
    merged_tokens_go_back_together,
    merging_tokens_of_another_client_hands_them_back,
    try_acquire_many_is_all_or_nothing,
);

fn split_units_go_back_one_at_a_time<D: Driver>() {
    D::block_on(async {
        let server = Server::<D>::new(4).expect("server");
        let client = server.client().expect("client");
        let mut four = within("4", client.acquire_many(4)).await.expect("4 tokens");
        assert_eq!(server.available().unwrap(), 0);
        assert!(four.split(5).is_none(), "split more units than held");
        assert_eq!(four.units(), 4);
        for (i, expect_free) in [1, 2, 3].into_iter().enumerate() {
            let one = four.split(1).expect("a unit");
            assert_eq!(one.units(), 1);
            assert_eq!(four.units(), 3 - i);
            drop(one);
            assert_eq!(
                server.available().unwrap(),
                expect_free,
                "after {} releases",
                i + 1
            );
        }
        // The last unit is the implicit slot: no byte behind it.
        drop(four);
        assert_eq!(server.available().unwrap(), 3);
        drop(client);
        assert!(server.shutdown().expect("shutdown").is_balanced());
    });
}

fn merged_tokens_go_back_together<D: Driver>() {
    D::block_on(async {
        let server = Server::<D>::new(3).expect("server");
        let client = server.client().expect("client");
        let mut a = within("a", client.acquire()).await.expect("a");
        let b = within("b", client.clone().acquire()).await.expect("b");
        let c = within("c", client.acquire()).await.expect("c");
        assert_eq!(server.available().unwrap(), 0);
        a.merge(b).expect("same client (a clone)");
        a.merge(c).expect("same client");
        assert_eq!(a.units(), 3);
        assert_eq!(server.available().unwrap(), 0);
        drop(a);
        assert_eq!(server.available().unwrap(), 2);
    });
}

fn merging_tokens_of_another_client_hands_them_back<D: Driver>() {
    D::block_on(async {
        let (s1, s2) = (Server::<D>::new(2).unwrap(), Server::<D>::new(2).unwrap());
        let (c1, c2) = (s1.client().unwrap(), s2.client().unwrap());
        let mut a = within("a", c1.acquire_many(2)).await.expect("a");
        let b = within("b", c2.acquire_many(2)).await.expect("b");
        let b = a.merge(b).expect_err("another pool's token");
        assert_eq!((a.units(), b.units()), (2, 2));
        drop(b);
        assert_eq!(s2.available().unwrap(), 1);
        assert_eq!(s1.available().unwrap(), 0);
    });
}

fn try_acquire_many_is_all_or_nothing<D: Driver>() {
    D::block_on(async {
        let server = Server::<D>::new(4).expect("server");
        let client = server.client().expect("client");
        let two = within("2", client.acquire_many(2)).await.expect("2 tokens");
        assert_eq!(server.available().unwrap(), 2);
        // 3 more are not free (only 2 bytes are): nothing taken, nothing kept.
        assert!(client.try_acquire_many(3).expect("try").is_none());
        assert_eq!(server.available().unwrap(), 2);
        let more = client.try_acquire_many(2).expect("try").expect("2 free");
        assert_eq!(more.units(), 2);
        assert_eq!(server.available().unwrap(), 0);
        drop((two, more));
        assert_eq!(server.available().unwrap(), 3);
    });
}
