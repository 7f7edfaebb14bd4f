//! Throw-away databases owned by the test's owner role, and what their migration table
//! records. Also compiled into proxy-allocator's PostgreSQL tests (by `#[path]`).

use tenant_isolation::pg::reexports::tokio_postgres::{self, NoTls};
use tenant_isolation::pg::{MIGRATIONS_TABLE, MigrationSet};

/// A fresh database owned by the test's owner role; dropped when the guard is dropped.
pub struct ScratchDb {
    pub name: String,
    pub url: String,
}

pub async fn owner_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap_or_else(|e| {
        panic!("PostgreSQL is required for this test (DATABASE_URL, default 127.0.0.1:5432/chipfleet): {e}")
    });
    tokio::spawn(connection);
    client
}

impl ScratchDb {
    pub async fn create() -> Self {
        Self::create_with("").await
    }

    /// A fresh database created with extra `CREATE DATABASE` options (e.g. a collation).
    pub async fn create_with(options: &str) -> Self {
        let name = format!("ti_mig_{}", tenant_isolation::TenantId::generate().as_str());
        let client = owner_client(&super::admin_url()).await;
        client
            .batch_execute(&format!("CREATE DATABASE {name} {options}"))
            .await
            .expect("the owner role needs CREATEDB");
        let base = super::admin_url();
        let (prefix, _) = base.rsplit_once('/').expect("URL has a database");
        ScratchDb {
            url: format!("{prefix}/{name}"),
            name,
        }
    }

    /// Drops the database, waiting (in this runtime, so dropped pools can close their
    /// connections) for the application role's connections to go away. The guard's `Drop`
    /// is the fallback when a test panics before this.
    pub async fn drop_db(mut self) {
        let client = owner_client(&super::admin_url()).await;
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let mut attempts = 0;
        loop {
            match client.batch_execute(&sql).await {
                Ok(()) => break,
                Err(e) if attempts >= 100 => {
                    panic!("could not drop scratch database {}: {e:?}", self.name)
                }
                Err(_) => attempts += 1,
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        self.name.clear();
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        if self.name.is_empty() {
            return; // dropped by drop_db
        }
        let name = self.name.clone();
        // A separate thread with its own runtime: Drop may run inside (or outside) a runtime.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let client = owner_client(&super::admin_url()).await;
                // The application role's pooled connections close in the background when
                // their pool is dropped; the owner may not terminate them, so wait for them.
                let mut attempts = 0;
                loop {
                    let result = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                    attempts += 1;
                    if result.is_ok() || attempts >= 100 {
                        return result;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) && !std::thread::panicking() {
            panic!("could not drop scratch database {}", self.name);
        }
    }
}

/// A row of the shared migration table: `(component, version, name, checksum)`.
pub type MigrationRow = (String, i32, String, String);

/// The rows of the shared migration table in `client`'s database, in key order.
pub async fn recorded_migrations(client: &tokio_postgres::Client) -> Vec<MigrationRow> {
    client
        .query(
            &format!(
                "SELECT component, version, name, checksum FROM {MIGRATIONS_TABLE} \
                 ORDER BY component COLLATE \"C\", version"
            ),
            &[],
        )
        .await
        .expect("the migration table")
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3)))
        .collect()
}

/// The rows the migrations of `set` are recorded as once applied, in version order.
pub fn recorded_rows(set: &MigrationSet) -> Vec<MigrationRow> {
    set.migrations()
        .iter()
        .map(|migration| {
            (
                set.component().to_owned(),
                migration.version(),
                migration.name().to_owned(),
                migration.checksum(),
            )
        })
        .collect()
}
