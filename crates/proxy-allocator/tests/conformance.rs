//! The lease store conformance suite, against every backend.

mod in_memory {
    proxy_allocator::lease_store_conformance!(|| async {
        std::sync::Arc::new(proxy_allocator::InMemoryLeaseStore::new())
            as std::sync::Arc<dyn proxy_allocator::LeaseStore>
    });
}

#[cfg(feature = "postgres")]
mod postgres {
    async fn store() -> std::sync::Arc<dyn proxy_allocator::LeaseStore> {
        let url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://chipfleet:chipfleet@127.0.0.1:5432/chipfleet".into());
        let store = proxy_allocator::PostgresLeaseStore::from_url(&url, 16).expect("store");
        store.migrate().await.unwrap_or_else(|err| {
            panic!("PostgreSQL must be running (scripts/test-env.sh); migrate failed: {err}")
        });
        std::sync::Arc::new(store)
    }

    proxy_allocator::lease_store_conformance!(store);
}
