//! Credits in storage: the balances meters fill from, the batches of spends they write back
//! (with the ledger and the `credits.low` / `credits.exhausted` events and audit entries),
//! and the conditional update that decides a spend where storage is the meter.

use serde_json::json;
use sqlx::Row;

use super::api_keys::credits_from_row;
use super::audit::{record, Audit};
use super::webhooks::enqueue;
use super::{Store, StoreResult};
use crate::domain::credits::{crossings, Balance, KeyCredits, Spent};

/// A spend a meter admitted, on its way to storage.
#[derive(Clone, Debug)]
pub struct CreditSpend {
    /// The key used (named by the ledger and the events).
    pub key_id: String,
    /// Whose row holds the balance: the key's roll line (`ApiKeyRecord::line`).
    pub line: String,
    /// Its organization.
    pub org_id: String,
    /// Its name (for the events).
    pub key_name: String,
    /// The generation of the settings the meter decided under.
    pub gen: i64,
    /// Credits taken.
    pub cost: i64,
    /// The balance after the spend.
    pub balance: Balance,
    /// It took the balance to 10 % of its amount.
    pub low: bool,
    /// It took the balance to zero.
    pub exhausted: bool,
    /// Unix ms.
    pub at: i64,
}

/// The key whose credits storage decides.
pub struct CreditKey<'a> {
    /// The key used.
    pub id: &'a str,
    /// Whose row holds the balance: the key's roll line.
    pub line: &'a str,
    /// Its organization.
    pub org_id: &'a str,
    /// Its name.
    pub name: &'a str,
    /// The generation of the credit settings the caller decided `period` under.
    pub gen: i64,
}

impl Store {
    /// A key's credits as storage holds them now (a meter fills from this).
    pub async fn key_credits(&self, key_id: &str) -> StoreResult<Option<KeyCredits>> {
        let row = sqlx::query(
            "SELECT credits_remaining, credits_base, credits_period, credits_gen, \
             credits_refill_interval, credits_refill_amount, credits_refill_day \
             FROM api_keys WHERE id = $1",
        )
        .bind(key_id)
        .fetch_optional(self.db())
        .await?;
        Ok(row.as_ref().map(credits_from_row).transpose()?.flatten())
    }

    /// Writes admitted spends in one transaction: each key's balance follows its meter's
    /// (only ever down within a period, or on to a later period), one ledger row per key,
    /// generation and period, and the alerts the spends crossed. On SQLite in a file the
    /// whole transaction is one hand-off to the writer thread.
    pub async fn record_credit_spends(&self, spends: Vec<CreditSpend>) -> StoreResult<()> {
        if spends.is_empty() {
            return Ok(());
        }
        let alerted = spends.iter().any(|s| s.low || s.exhausted);
        if self.has_writer() {
            self.write_batch(move |tx| record_spends_sqlite(tx, &spends))
                .await?;
        } else {
            let mut tx = self.begin_write().await?;
            for g in groups(&spends) {
                sqlx::query(UPDATE_BALANCE)
                    .bind(g.balance.remaining)
                    .bind(g.balance.base)
                    .bind(g.balance.period)
                    .bind(&g.spend.line)
                    .bind(g.spend.gen)
                    .execute(&mut *tx)
                    .await?;
                ledger(&mut tx, g.spend, g.cost, g.uses, g.balance.remaining).await?;
            }
            for s in spends.iter().filter(|s| s.low || s.exhausted) {
                alerts(&mut tx, s).await?;
            }
            tx.commit().await?;
        }
        if alerted {
            self.webhook_events_committed();
        }
        Ok(())
    }

    /// Decides a spend of `cost` in storage, atomically (the meter of PostgreSQL without
    /// Redis): the balance, refilled first if the period that began at `period` is newer, is
    /// taken down only if it holds `cost`; the ledger and the alerts commit with it. `None`
    /// when the key has no credits (any more). `Err(settings)`, nothing spent, when the
    /// line's credit settings are no longer generation `key.gen` (they changed since the
    /// caller read them): decide again under these.
    pub async fn spend_credits(
        &self,
        key: CreditKey<'_>,
        period: i64,
        cost: i64,
        now: i64,
    ) -> StoreResult<Result<Option<Spent>, KeyCredits>> {
        let mut tx = self.begin_write().await?;
        // Every `CASE` reads the row as it was before this update.
        let row = sqlx::query(
            "UPDATE api_keys SET \
             credits_remaining = (CASE WHEN credits_period < $2 THEN credits_refill_amount \
                                  ELSE credits_remaining END) - $3, \
             credits_base = CASE WHEN credits_period < $2 THEN credits_refill_amount \
                            ELSE credits_base END, \
             credits_period = CASE WHEN credits_period < $2 THEN $2 ELSE credits_period END \
             WHERE id = $1 AND credits_remaining IS NOT NULL AND credits_gen = $4 \
             AND (CASE WHEN credits_period < $2 THEN credits_refill_amount \
                  ELSE credits_remaining END) >= $3 \
             AND (CASE WHEN credits_period < $2 THEN credits_refill_amount \
                  ELSE credits_remaining END) > 0 \
             RETURNING credits_remaining, credits_base, credits_period, credits_gen",
        )
        .bind(key.line)
        .bind(period)
        .bind(cost)
        .bind(key.gen)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            drop(tx);
            // Refused (or no credits): report the balance as it stands now.
            let Some(c) = self.key_credits(key.line).await? else {
                return Ok(Ok(None));
            };
            if c.gen != key.gen {
                return Ok(Err(c));
            }
            let balance = c.balance.at(c.refill.as_ref(), now);
            return Ok(Ok(Some(Spent {
                admitted: false,
                balance,
                low: false,
                exhausted: false,
            })));
        };
        let balance = Balance {
            remaining: row.try_get("credits_remaining")?,
            base: row.try_get("credits_base")?,
            period: row.try_get("credits_period")?,
        };
        let gen: i64 = row.try_get("credits_gen")?;
        let (low, exhausted) = crossings(balance.remaining + cost, balance.remaining, balance.base);
        let s = CreditSpend {
            key_id: key.id.to_string(),
            line: key.line.to_string(),
            org_id: key.org_id.to_string(),
            key_name: key.name.to_string(),
            gen,
            cost,
            balance,
            low,
            exhausted,
            at: now,
        };
        ledger(&mut tx, &s, cost, 1, balance.remaining).await?;
        if low || exhausted {
            alerts(&mut tx, &s).await?;
        }
        tx.commit().await?;
        if low || exhausted {
            self.webhook_events_committed();
        }
        Ok(Ok(Some(Spent {
            admitted: true,
            balance,
            low,
            exhausted,
        })))
    }
}

/// A balance follows its meter's: only ever down within a period, or on to a later period.
const UPDATE_BALANCE: &str = "UPDATE api_keys SET credits_remaining = $1, credits_base = $2, \
     credits_period = $3 WHERE id = $4 AND credits_gen = $5 AND credits_remaining IS NOT NULL \
     AND (credits_period < $3 OR (credits_period = $3 AND credits_remaining > $1))";

const INSERT_LEDGER: &str = "INSERT INTO credit_spends (key_id, org_id, gen, period, amount, \
     uses, remaining, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

/// The spends of one key (on its line's balance) under one generation in one period.
struct Group<'a> {
    /// One of them (its key, line, organization, generation and period name the group).
    spend: &'a CreditSpend,
    /// Their lowest balance.
    balance: Balance,
    /// Their total cost.
    cost: i64,
    /// How many.
    uses: i64,
}

/// A batch's spends by key, generation and period, earliest period first.
fn groups(spends: &[CreditSpend]) -> Vec<Group<'_>> {
    let mut groups: Vec<Group<'_>> = Vec::new();
    for s in spends {
        let same = |g: &&mut Group<'_>| {
            g.spend.line == s.line
                && g.spend.key_id == s.key_id
                && g.spend.gen == s.gen
                && g.balance.period == s.balance.period
        };
        match groups.iter_mut().find(same) {
            Some(g) => {
                if s.balance.remaining < g.balance.remaining {
                    g.balance = s.balance;
                }
                g.cost += s.cost;
                g.uses += 1;
            }
            None => groups.push(Group {
                spend: s,
                balance: s.balance,
                cost: s.cost,
                uses: 1,
            }),
        }
    }
    groups.sort_by_key(|g| g.balance.period);
    groups
}

/// [`Store::record_credit_spends`] on the SQLite writer's transaction.
fn record_spends_sqlite(tx: &rusqlite::Transaction<'_>, spends: &[CreditSpend]) -> StoreResult<()> {
    use super::sqlite_writer::sql;
    let mut update = tx.prepare_cached(&sql(UPDATE_BALANCE))?;
    let mut insert = tx.prepare_cached(&sql(INSERT_LEDGER))?;
    for g in groups(spends) {
        let (s, b) = (g.spend, g.balance);
        update.execute(rusqlite::params![
            b.remaining,
            b.base,
            b.period,
            s.line,
            s.gen
        ])?;
        insert.execute(rusqlite::params![
            s.key_id,
            s.org_id,
            s.gen,
            b.period,
            g.cost,
            g.uses,
            b.remaining,
            s.at
        ])?;
    }
    for s in spends.iter().filter(|s| s.low || s.exhausted) {
        let (audit, data) = alert_parts(s);
        for event in alert_events(s) {
            super::audit::record_sqlite(tx, &s.org_id, &audit, event, Some(&s.key_id), &data)?;
            super::webhooks::enqueue_sqlite(tx, &s.org_id, event, data.clone(), s.at)?;
        }
    }
    Ok(())
}

async fn ledger(
    conn: &mut super::exec::Conn,
    s: &CreditSpend,
    amount: i64,
    uses: i64,
    remaining: i64,
) -> StoreResult<()> {
    sqlx::query(INSERT_LEDGER)
        .bind(&s.key_id)
        .bind(&s.org_id)
        .bind(s.gen)
        .bind(s.balance.period)
        .bind(amount)
        .bind(uses)
        .bind(remaining)
        .bind(s.at)
        .execute(conn)
        .await?;
    Ok(())
}

/// The audit entry's author and the event's data of `s`'s alerts.
fn alert_parts(s: &CreditSpend) -> (Audit, serde_json::Value) {
    let data = json!({
        "key_id": s.key_id,
        "org_id": s.org_id,
        "name": s.key_name,
        "remaining": s.balance.remaining,
        "amount": s.balance.base,
        "period_start": s.balance.period,
    });
    let audit = Audit {
        actor: "system".into(),
        ip: None,
        now: s.at,
    };
    (audit, data)
}

/// The alerts `s` crossed.
fn alert_events(s: &CreditSpend) -> impl Iterator<Item = &'static str> {
    [(s.low, "credits.low"), (s.exhausted, "credits.exhausted")]
        .into_iter()
        .filter_map(|(crossed, event)| crossed.then_some(event))
}

/// `credits.low` and `credits.exhausted`: a webhook event and an audit entry each, by the
/// system.
async fn alerts(conn: &mut super::exec::Conn, s: &CreditSpend) -> StoreResult<()> {
    let (audit, data) = alert_parts(s);
    for event in alert_events(s) {
        record(
            conn,
            &s.org_id,
            &audit,
            event,
            Some(&s.key_id),
            data.clone(),
        )
        .await?;
        enqueue(conn, &s.org_id, event, data.clone(), s.at).await?;
    }
    Ok(())
}
