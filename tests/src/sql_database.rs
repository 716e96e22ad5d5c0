//! A SQL database for one test: a shared server's (PostgreSQL, MySQL, found or started by
//! [`crate::services`]) or a SQLite file of its own, with a table prefix unique to the test.

use std::path::PathBuf;

use ratelimit_core::{SqlBackend, SqlBackendBuilder};

use crate::services::{self, unique_sql_prefix};

/// The engines a SQL test runs on.
#[derive(Clone, Copy, Debug)]
pub enum Engine {
    Postgres,
    Mysql,
    Sqlite,
}

/// Where one test's tables live; the SQLite file is deleted on drop.
#[derive(Debug)]
pub struct Database {
    pub engine: Engine,
    pub url: String,
    pub prefix: String,
    file: Option<PathBuf>,
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Some(file) = &self.file {
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let mut path = file.clone().into_os_string();
                path.push(suffix);
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

impl Database {
    /// The database for `engine`, or `None` to skip (the services decide, see `services`).
    pub async fn new(engine: Engine, test: &str) -> Option<Self> {
        let prefix = unique_sql_prefix(test);
        let (url, file) = match engine {
            Engine::Postgres => (services::postgres().await?.url().to_owned(), None),
            Engine::Mysql => (services::mysql().await?.url().to_owned(), None),
            Engine::Sqlite => {
                let file = std::env::temp_dir().join(format!("{prefix}.sqlite3"));
                (format!("sqlite://{}", file.display()), Some(file))
            }
        };
        Some(Self {
            engine,
            url,
            prefix,
            file,
        })
    }

    /// A builder of a backend on this database's tables (on the database's clock unless the
    /// caller sets one).
    #[must_use]
    pub fn builder(&self) -> SqlBackendBuilder {
        SqlBackend::builder(&self.url).table_prefix(&self.prefix)
    }

    /// Builds `builder`; a database that cannot be reached fails the test.
    pub async fn connect(&self, builder: SqlBackendBuilder) -> SqlBackend {
        builder
            .build()
            .await
            .unwrap_or_else(|error| panic!("connecting to {}: {error}", self.url))
    }

    /// Drops every table and routine of this database's prefix.
    pub async fn drop_tables(&self) {
        let backend = self.connect(self.builder()).await;
        if let Err(error) = backend.drop_tables().await {
            panic!("dropping {}*: {error}", self.prefix);
        }
    }
}
