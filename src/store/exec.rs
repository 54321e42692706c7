//! Where store code runs its statements: [`Db`] (the pool) and [`Conn`] (one connection, in a
//! transaction or not). Both behave as sqlx's own executors on a direct connection; behind a
//! transaction pooler (`database_pooler = "transaction"`) they change two things:
//!
//! - **Every statement is unnamed.** sqlx prepares a named statement per connection and reuses
//!   it later; a transaction pooler hands the next transaction another server connection,
//!   where that name means nothing or another client's statement.
//! - **Every statement runs inside a transaction.** sqlx sends `Parse`/`Describe`/`Sync`, waits,
//!   then `Bind`/`Execute`/`Sync`. Outside a transaction the pooler may give the second half to
//!   another server connection, where the unnamed statement is missing or another client's.
//!   Inside `BEGIN … COMMIT` both halves reach the same server connection.
//!
//! The pooler also forgets session settings between transactions, so `lock_timeout` is set
//! with `SET LOCAL` in each transaction rather than once per connection.
//!
//! sqlx has no switch for either (its statement cache at capacity 0 still names statements,
//! which then collide between clients), hence this thin layer: one `Executor` per handle,
//! choosing per store, not one `if` per query.

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::{FutureExt, StreamExt, TryStreamExt};
use sqlx::any::{AnyArguments, AnyQueryResult, AnyRow, AnyStatement, AnyTypeInfo};
use sqlx::error::BoxDynError;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Either, Execute, Executor, Transaction};

/// How a PostgreSQL transaction begins behind a transaction pooler: with its lock timeout,
/// since the session's own setting is not kept between transactions.
pub(super) fn begin_pooled() -> String {
    format!(
        "BEGIN; SET LOCAL lock_timeout = '{}s'",
        super::engine::BUSY_TIMEOUT.as_secs()
    )
}

/// A query whose statement is not kept (prepared unnamed): see the module documentation.
struct Unnamed<E>(E);

impl<'q, E: Execute<'q, Any>> Execute<'q, Any> for Unnamed<E> {
    fn sql(&self) -> &'q str {
        self.0.sql()
    }
    fn statement(&self) -> Option<&AnyStatement<'q>> {
        self.0.statement()
    }
    fn take_arguments(&mut self) -> Result<Option<AnyArguments<'q>>, BoxDynError> {
        self.0.take_arguments()
    }
    fn persistent(&self) -> bool {
        false
    }
}

/// The pool as an executor: `query.fetch_all(store.db())`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Db<'p> {
    pub(super) pool: &'p AnyPool,
    /// Behind a transaction pooler: each statement in a transaction of its own, unnamed.
    pub(super) pooled: bool,
}

impl<'p> Executor<'p> for Db<'p> {
    type Database = Any;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<AnyQueryResult, AnyRow>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Any>,
    {
        if !self.pooled {
            return self.pool.fetch_many(query);
        }
        let pool = self.pool;
        async_stream::try_stream! {
            let mut tx = pool.begin_with(begin_pooled()).await?;
            {
                let mut steps = (&mut *tx).fetch_many(Unnamed(query));
                while let Some(step) = steps.try_next().await? {
                    yield step;
                }
            }
            tx.commit().await?;
        }
        .boxed()
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<AnyRow>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Any>,
    {
        if !self.pooled {
            return self.pool.fetch_optional(query);
        }
        let pool = self.pool;
        async move {
            let mut tx = pool.begin_with(begin_pooled()).await?;
            let row = (&mut *tx).fetch_optional(Unnamed(query)).await?;
            tx.commit().await?;
            Ok(row)
        }
        .boxed()
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [AnyTypeInfo],
    ) -> BoxFuture<'e, Result<AnyStatement<'q>, sqlx::Error>>
    where
        'p: 'e,
    {
        self.pool.prepare_with(sql, parameters)
    }

    fn describe<'e, 'q: 'e>(
        self,
        sql: &'q str,
    ) -> BoxFuture<'e, Result<sqlx::Describe<Any>, sqlx::Error>>
    where
        'p: 'e,
    {
        self.pool.describe(sql)
    }
}

/// One connection of the pool: a transaction ([`super::WriteTx`] holds one) or, for a few
/// reads in a row, a plain connection (behind a transaction pooler, a transaction too).
#[derive(Debug)]
pub(crate) struct Conn {
    inner: Inner,
    /// Behind a transaction pooler: statements unnamed.
    pooled: bool,
}

#[derive(Debug)]
enum Inner {
    Tx(Transaction<'static, Any>),
    Plain(PoolConnection<Any>),
}

impl Conn {
    pub(super) fn tx(tx: Transaction<'static, Any>, pooled: bool) -> Self {
        Self {
            inner: Inner::Tx(tx),
            pooled,
        }
    }

    pub(super) fn plain(conn: PoolConnection<Any>) -> Self {
        Self {
            inner: Inner::Plain(conn),
            pooled: false,
        }
    }

    fn raw(&mut self) -> &mut AnyConnection {
        match &mut self.inner {
            Inner::Tx(tx) => tx,
            Inner::Plain(conn) => conn,
        }
    }

    /// Commits the transaction (a plain connection has nothing to commit).
    pub(super) async fn commit(self) -> Result<(), sqlx::Error> {
        match self.inner {
            Inner::Tx(tx) => tx.commit().await,
            Inner::Plain(_) => Ok(()),
        }
    }

    /// Rolls the transaction back.
    pub(super) async fn rollback(self) -> Result<(), sqlx::Error> {
        match self.inner {
            Inner::Tx(tx) => tx.rollback().await,
            Inner::Plain(_) => Ok(()),
        }
    }
}

impl<'c> Executor<'c> for &'c mut Conn {
    type Database = Any;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<AnyQueryResult, AnyRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Any>,
    {
        let pooled = self.pooled;
        let conn = self.raw();
        if pooled {
            conn.fetch_many(Unnamed(query))
        } else {
            conn.fetch_many(query)
        }
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<AnyRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Any>,
    {
        let pooled = self.pooled;
        let conn = self.raw();
        if pooled {
            conn.fetch_optional(Unnamed(query))
        } else {
            conn.fetch_optional(query)
        }
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [AnyTypeInfo],
    ) -> BoxFuture<'e, Result<AnyStatement<'q>, sqlx::Error>>
    where
        'c: 'e,
    {
        self.raw().prepare_with(sql, parameters)
    }

    fn describe<'e, 'q: 'e>(
        self,
        sql: &'q str,
    ) -> BoxFuture<'e, Result<sqlx::Describe<Any>, sqlx::Error>>
    where
        'c: 'e,
    {
        self.raw().describe(sql)
    }
}
