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
    /// The key.
    pub key_id: String,
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
    /// The key.
    pub id: &'a str,
    /// Its organization.
    pub org_id: &'a str,
    /// Its name.
    pub name: &'a str,
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
    /// generation and period, and the alerts the spends crossed.
    pub async fn record_credit_spends(&self, spends: &[CreditSpend]) -> StoreResult<()> {
        if spends.is_empty() {
            return Ok(());
        }
        let mut groups: Vec<(Group<'_>, Totals)> = Vec::new();
        for (i, s) in spends.iter().enumerate() {
            let k = (s.key_id.as_str(), s.gen, s.balance.period);
            match groups.iter_mut().find(|(g, _)| *g == k) {
                Some((_, (b, cost, uses, _))) => {
                    if s.balance.remaining < b.remaining {
                        *b = s.balance;
                    }
                    *cost += s.cost;
                    *uses += 1;
                }
                None => groups.push((k, (s.balance, s.cost, 1, i))),
            }
        }
        groups.sort_by_key(|((_, _, period), _)| *period);
        let mut tx = self.begin_write().await?;
        for ((key_id, gen, period), (b, cost, uses, i)) in &groups {
            sqlx::query(
                "UPDATE api_keys SET credits_remaining = $1, credits_base = $2, credits_period = $3 \
                 WHERE id = $4 AND credits_gen = $5 AND credits_remaining IS NOT NULL \
                 AND (credits_period < $3 OR (credits_period = $3 AND credits_remaining > $1))",
            )
            .bind(b.remaining)
            .bind(b.base)
            .bind(*period)
            .bind(*key_id)
            .bind(*gen)
            .execute(&mut *tx)
            .await?;
            let s = &spends[*i];
            ledger(&mut tx, s, *cost, *uses, b.remaining).await?;
        }
        for s in spends.iter().filter(|s| s.low || s.exhausted) {
            alerts(&mut tx, s).await?;
        }
        tx.commit().await?;
        if spends.iter().any(|s| s.low || s.exhausted) {
            self.webhook_events_committed();
        }
        Ok(())
    }

    /// Decides a spend of `cost` in storage, atomically (the meter of PostgreSQL without
    /// Redis): the balance, refilled first if the period that began at `period` is newer, is
    /// taken down only if it holds `cost`; the ledger and the alerts commit with it. `None`
    /// when the key has no credits (any more).
    pub async fn spend_credits(
        &self,
        key: CreditKey<'_>,
        period: i64,
        cost: i64,
        now: i64,
    ) -> StoreResult<Option<Spent>> {
        let mut tx = self.begin_write().await?;
        // Every `CASE` reads the row as it was before this update.
        let row = sqlx::query(
            "UPDATE api_keys SET \
             credits_remaining = (CASE WHEN credits_period < $2 THEN credits_refill_amount \
                                  ELSE credits_remaining END) - $3, \
             credits_base = CASE WHEN credits_period < $2 THEN credits_refill_amount \
                            ELSE credits_base END, \
             credits_period = CASE WHEN credits_period < $2 THEN $2 ELSE credits_period END \
             WHERE id = $1 AND credits_remaining IS NOT NULL \
             AND (CASE WHEN credits_period < $2 THEN credits_refill_amount \
                  ELSE credits_remaining END) >= $3 \
             AND (CASE WHEN credits_period < $2 THEN credits_refill_amount \
                  ELSE credits_remaining END) > 0 \
             RETURNING credits_remaining, credits_base, credits_period, credits_gen",
        )
        .bind(key.id)
        .bind(period)
        .bind(cost)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            drop(tx);
            // Refused (or no credits): report the balance as it stands now.
            let Some(c) = self.key_credits(key.id).await? else {
                return Ok(None);
            };
            let balance = c.balance.at(c.refill.as_ref(), now);
            return Ok(Some(Spent {
                admitted: false,
                balance,
                low: false,
                exhausted: false,
            }));
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
        Ok(Some(Spent {
            admitted: true,
            balance,
            low,
            exhausted,
        }))
    }
}

/// The spends of one key under one generation in one period.
type Group<'a> = (&'a str, i64, i64);
/// Their lowest balance, total cost, number, and the index of one of them.
type Totals = (Balance, i64, i64, usize);

async fn ledger(
    conn: &mut super::exec::Conn,
    s: &CreditSpend,
    amount: i64,
    uses: i64,
    remaining: i64,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO credit_spends (key_id, org_id, gen, period, amount, uses, remaining, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
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

/// `credits.low` and `credits.exhausted`: a webhook event and an audit entry each, by the
/// system.
async fn alerts(conn: &mut super::exec::Conn, s: &CreditSpend) -> StoreResult<()> {
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
    for (crossed, event) in [(s.low, "credits.low"), (s.exhausted, "credits.exhausted")] {
        if crossed {
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
    }
    Ok(())
}
