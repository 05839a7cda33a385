//! The SQLite baseline: the same items as JSON text, the same secondary index.

use std::path::Path;

use anyhow::{Result, bail};
use rusqlite::{Connection, params};

use crate::ferry_side::item;
use crate::{ITEMS_PER_DEVICE, PAGE_ITEMS, Subject};

/// SQLite in WAL mode with `synchronous=NORMAL`, prepared statements, autocommit.
pub struct Sqlite {
    conn: Connection,
}

impl Sqlite {
    pub fn open(path: &Path) -> Result<Sqlite> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(
            "CREATE TABLE items (pk TEXT NOT NULL, sk TEXT NOT NULL, gs1pk TEXT, gs1sk TEXT,
                                 data TEXT NOT NULL, PRIMARY KEY (pk, sk)) WITHOUT ROWID;
             CREATE INDEX gs1 ON items (gs1pk, gs1sk);",
        )?;
        Ok(Sqlite { conn })
    }

    /// Opens a database [`Sqlite::open`] made.
    pub fn open_existing(path: &Path) -> Result<Sqlite> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        Ok(Sqlite { conn })
    }

    /// Item `seq` as JSON.
    pub fn read(&mut self, seq: u64) -> Result<serde_json::Value> {
        let (pk, sk) = keys(seq);
        let mut stmt = self
            .conn
            .prepare_cached("SELECT data FROM items WHERE pk = ?1 AND sk = ?2")?;
        let data: String = stmt.query_row(params![pk, sk], |row| row.get(0))?;
        Ok(serde_json::from_str(&data)?)
    }
}

fn keys(seq: u64) -> (String, String) {
    (
        format!("dev#{}", seq / ITEMS_PER_DEVICE),
        format!("r#{seq:012}"),
    )
}

impl Subject for Sqlite {
    fn create(&mut self, seq: u64) -> Result<()> {
        let (pk, sk) = keys(seq);
        let data = item(seq);
        let gs1pk = format!("kind#{}", data["kind"].as_str().unwrap_or_default());
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO items (pk, sk, gs1pk, gs1sk, data) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        stmt.execute(params![
            pk,
            sk,
            gs1pk,
            format!("{seq:012}"),
            data.to_string()
        ])?;
        Ok(())
    }

    fn get(&mut self, seq: u64) -> Result<()> {
        self.read(seq).map(|_| ())
    }

    fn page(&mut self, device: u64) -> Result<usize> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT data FROM items WHERE pk = ?1 ORDER BY sk LIMIT ?2")?;
        let mut rows = stmt.query(params![format!("dev#{device}"), PAGE_ITEMS as i64])?;
        let mut n = 0;
        while let Some(row) = rows.next()? {
            let data: String = row.get(0)?;
            let _: serde_json::Value = serde_json::from_str(&data)?;
            n += 1;
        }
        Ok(n)
    }

    fn update(&mut self, seq: u64) -> Result<()> {
        let (pk, sk) = keys(seq);
        let mut stmt = self.conn.prepare_cached(
            "UPDATE items SET data = json_set(data, '$.value', ?3) WHERE pk = ?1 AND sk = ?2",
        )?;
        if stmt.execute(params![pk, sk, (seq % 997) as i64])? != 1 {
            bail!("sqlite: item {seq} is missing");
        }
        Ok(())
    }
}
