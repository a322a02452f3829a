//! Reading the trail by filter: search pages, one event, stats, export and tail batches.

use sqlx::Row;
use tether_runtime::db::{Backend, Database};

use super::records::{COLUMNS, StoredRecord};
use crate::domain::{
    event::MAX_CLOCK_SKEW_MICROS,
    filter::{Filter, Reach},
};

/// A bound value of a built query.
enum Arg {
    Text(String),
    Int(i64),
}

/// A WHERE clause under construction: conditions joined with AND, values bound in order.
#[derive(Default)]
struct Conditions {
    sql: Vec<String>,
    args: Vec<Arg>,
}

impl Conditions {
    fn next(&self) -> String {
        format!("${}", self.args.len() + 1)
    }

    fn text(&mut self, column: &str, op: &str, value: String) {
        let p = self.next();
        self.sql.push(format!("{column} {op} {p}"));
        self.args.push(Arg::Text(value));
    }

    fn int(&mut self, column: &str, op: &str, value: i64) {
        let p = self.next();
        self.sql.push(format!("{column} {op} {p}"));
        self.args.push(Arg::Int(value));
    }

    fn raw(&mut self, sql: String, args: Vec<Arg>) {
        self.sql.push(sql);
        self.args.extend(args);
    }

    /// The filter and the caller's reach, on `backend`.
    fn filtered(filter: &Filter, reach: &Reach, backend: Backend) -> Self {
        let mut c = Self::default();
        if let Some(q) = &filter.query {
            let escaped = q.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
            let p = c.next();
            c.raw(format!("search_text LIKE {p} ESCAPE '\\'"), vec![Arg::Text(format!("%{escaped}%"))]);
        }
        for (column, value) in [
            ("action", &filter.action),
            ("resource_type", &filter.resource_type),
            ("resource_id", &filter.resource_id),
            ("actor_user_id", &filter.actor_user_id),
            ("source_service", &filter.source_service),
            ("trace_id", &filter.trace_id),
        ] {
            if let Some(v) = value {
                c.text(column, "=", v.clone());
            }
        }
        if let Some(o) = filter.outcome {
            c.int("outcome", "=", i64::from(o));
        }
        if let Some(s) = filter.start {
            c.int("occurred_at", ">=", s);
            // An event is received at most the clock skew before it occurred (Ingest refuses the
            // rest), so PostgreSQL may skip the months received before that (store::partitions).
            if backend == Backend::Postgres {
                c.int("received_at", ">=", s.saturating_sub(MAX_CLOCK_SKEW_MICROS));
            }
        }
        if let Some(e) = filter.end {
            c.int("occurred_at", "<", e);
        }
        if let Some(tenants) = &reach.tenants {
            let start = c.args.len();
            let params = (1..=tenants.len()).map(|i| format!("${}", start + i)).collect::<Vec<_>>().join(", ");
            c.raw(format!("tenant_id IN ({params})"), tenants.iter().cloned().map(Arg::Text).collect());
        }
        if reach.hide_msp_actors {
            c.sql.push("actor_is_msp_staff = 0".to_owned());
        }
        c
    }

    fn where_sql(&self) -> String {
        if self.sql.is_empty() { "1 = 1".to_owned() } else { self.sql.join(" AND ") }
    }

    fn query(self, sql: String) -> sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments> {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for arg in self.args {
            query = match arg {
                Arg::Text(t) => query.bind(t),
                Arg::Int(i) => query.bind(i),
            };
        }
        query
    }
}

/// Where a page starts: after this (occurred_at, sequence).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub occurred_at: i64,
    pub sequence: u64,
}

impl Cursor {
    pub fn encode(&self) -> String {
        format!("{}:{}", self.occurred_at, self.sequence)
    }

    pub fn decode(text: &str) -> Option<Self> {
        let (t, s) = text.split_once(':')?;
        Some(Self { occurred_at: t.parse().ok()?, sequence: s.parse().ok()? })
    }
}

/// Which way a listing runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// The audit page: newest first.
    NewestFirst,
    /// Exports: oldest first.
    OldestFirst,
}

/// Up to `limit` records matching, in `order`, after `cursor`.
pub async fn list(
    database: &Database,
    filter: &Filter,
    reach: &Reach,
    order: Order,
    after: Option<Cursor>,
    limit: usize,
) -> Result<Vec<StoredRecord>, sqlx::Error> {
    if reach.is_empty() {
        return Ok(Vec::new());
    }
    // The cursor's time also narrows the time range, so each page's index range starts at the
    // cursor: the OR below is not an index bound, and without this every page of an export
    // would scan again from the filter's start.
    let mut narrowed = filter.clone();
    if let Some(cursor) = after {
        match order {
            Order::OldestFirst => {
                narrowed.start = Some(narrowed.start.map_or(cursor.occurred_at, |s| s.max(cursor.occurred_at)));
            }
            Order::NewestFirst => {
                let end = cursor.occurred_at.saturating_add(1);
                narrowed.end = Some(narrowed.end.map_or(end, |e| e.min(end)));
            }
        }
    }
    let mut c = Conditions::filtered(&narrowed, reach, database.backend());
    let (cmp, dir) = match order {
        Order::NewestFirst => ("<", "DESC"),
        Order::OldestFirst => (">", "ASC"),
    };
    if let Some(cursor) = after {
        let (a, b) = (c.args.len() + 1, c.args.len() + 2);
        c.raw(
            format!("(occurred_at {cmp} ${a} OR (occurred_at = ${a} AND seq {cmp} ${b}))"),
            vec![Arg::Int(cursor.occurred_at), Arg::Int(cursor.sequence as i64)],
        );
    }
    let limit_param = c.args.len() + 1;
    let sql = format!(
        "SELECT {COLUMNS} FROM audit_events WHERE {} ORDER BY occurred_at {dir}, seq {dir} LIMIT ${limit_param}",
        c.where_sql()
    );
    c.args.push(Arg::Int(limit as i64));
    let rows = c.query(sql).fetch_all(database.pool()).await?;
    rows.iter().map(StoredRecord::from_row).collect()
}

/// One event by id, if the reach covers it.
pub async fn get(database: &Database, event_id: &str, reach: &Reach) -> Result<Option<StoredRecord>, sqlx::Error> {
    if reach.is_empty() {
        return Ok(None);
    }
    let mut c = Conditions::filtered(&Filter::default(), reach, database.backend());
    let p = c.next();
    c.raw(
        format!("seq = (SELECT seq FROM audit_event_ids WHERE event_id = {p})"),
        vec![Arg::Text(event_id.to_owned())],
    );
    let sql = format!("SELECT {COLUMNS} FROM audit_events WHERE {}", c.where_sql());
    let row = c.query(sql).fetch_optional(database.pool()).await?;
    row.as_ref().map(StoredRecord::from_row).transpose()
}

/// Matching records with a sequence in `(after, up_to]`, in sequence order, at most `limit`.
pub async fn after_sequence(
    database: &Database,
    filter: &Filter,
    reach: &Reach,
    after: u64,
    up_to: u64,
    limit: usize,
) -> Result<Vec<StoredRecord>, sqlx::Error> {
    if reach.is_empty() || after >= up_to {
        return Ok(Vec::new());
    }
    let mut c = Conditions::filtered(filter, reach, database.backend());
    c.int("seq", ">", after as i64);
    c.int("seq", "<=", up_to as i64);
    let p = c.args.len() + 1;
    let sql = format!("SELECT {COLUMNS} FROM audit_events WHERE {} ORDER BY seq LIMIT ${p}", c.where_sql());
    c.args.push(Arg::Int(limit as i64));
    let rows = c.query(sql).fetch_all(database.pool()).await?;
    rows.iter().map(StoredRecord::from_row).collect()
}

/// Counts over a window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub events: i64,
    pub active_users: i64,
    pub success: i64,
    pub failure: i64,
    pub denied: i64,
    /// Most frequent first, ties by name.
    pub actions: Vec<(String, i64)>,
}

pub async fn stats(
    database: &Database,
    filter: &Filter,
    reach: &Reach,
    top_actions: usize,
) -> Result<Stats, sqlx::Error> {
    if reach.is_empty() {
        return Ok(Stats::default());
    }
    // Two passes over the window's covering index (migration 4): counts per action and
    // outcome, folded here (a window holds a few hundred such groups at most), and the distinct
    // actors as a grouped subquery, which hashes where COUNT(DISTINCT ..) sorted and spilled.
    let c = Conditions::filtered(filter, reach, database.backend());
    let sql =
        format!("SELECT action, outcome, COUNT(*) FROM audit_events WHERE {} GROUP BY action, outcome", c.where_sql());
    let mut stats = Stats::default();
    let mut per_action: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
    for row in c.query(sql).fetch_all(database.pool()).await? {
        let (action, outcome, n): (String, i64, i64) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        stats.events += n;
        match outcome {
            1 => stats.success += n,
            2 => stats.failure += n,
            3 => stats.denied += n,
            _ => {}
        }
        *per_action.entry(action).or_default() += n;
    }
    let mut actions: Vec<(String, i64)> = per_action.into_iter().collect();
    actions.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    actions.truncate(top_actions);
    stats.actions = actions;
    let mut c = Conditions::filtered(filter, reach, database.backend());
    c.sql.push("actor_user_id <> ''".to_owned());
    let sql = format!(
        "SELECT COUNT(*) FROM (SELECT actor_user_id FROM audit_events WHERE {} GROUP BY actor_user_id) AS actors",
        c.where_sql()
    );
    stats.active_users = c.query(sql).fetch_one(database.pool()).await?.try_get(0)?;
    Ok(stats)
}
