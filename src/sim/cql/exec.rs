//! Statement planning and execution against the in-memory database: prepared plans, writes, batches, reads.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};

use cassandra_protocol::types::value::Value;
use sha2::{Digest, Sha256};

use super::capacity::{Capacity, CapacityModel};
use super::faults::{FaultHandle, WriteFault};
use super::parse::{self, Op, Rhs, Selection, Statement, TableName, Term};
use super::store::{Cell, Database, Keyspace, Table, Virtual};
use super::types::CqlType;

/// Cassandra's batch size thresholds for batches that span more than one partition.
pub const BATCH_WARN_BYTES: usize = 5 * 1024;
/// Multi-partition batches above this are refused.
pub const BATCH_FAIL_BYTES: usize = 50 * 1024;

/// Why a request failed, in the terms of the protocol's error codes.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    Syntax(String),
    Invalid(String),
    Unprepared(Vec<u8>),
    Write(WriteFault, &'static str),
    Protocol(String),
}

/// A bind marker's description.
#[derive(Debug, Clone)]
pub struct Spec {
    pub keyspace: String,
    pub table: String,
    pub name: String,
    pub ty: CqlType,
}

/// Rows to send back.
#[derive(Debug)]
pub struct RowSet {
    pub keyspace: String,
    pub table: String,
    pub columns: Vec<(String, CqlType)>,
    pub rows: Vec<Vec<Cell>>,
}

/// What a successful statement produced.
#[derive(Debug)]
pub enum Outcome {
    Void { warnings: Vec<String> },
    SetKeyspace(String),
    Rows(RowSet),
}

/// A value position of an INSERT: a bind marker or a literal encoded at planning time.
#[derive(Debug, Clone)]
enum Slot {
    Bind(usize),
    Fixed(Cell),
}

#[derive(Debug)]
struct InsertPlan {
    table: Arc<Table>,
    slots: Vec<(usize, Slot)>,
}

#[derive(Debug)]
enum Source {
    Table(Arc<Table>),
    System {
        keyspace: String,
        name: String,
        columns: Vec<(String, CqlType)>,
    },
}

impl Source {
    fn columns(&self) -> Vec<(String, CqlType)> {
        match self {
            Source::Table(t) => t
                .columns
                .iter()
                .map(|c| (c.name.clone(), c.ty.clone()))
                .collect(),
            Source::System { columns, .. } => columns.clone(),
        }
    }
}

#[derive(Debug)]
struct Filter {
    column: usize,
    op: Op,
    rhs: Rhs,
}

#[derive(Debug)]
struct SelectPlan {
    source: Source,
    keyspace: String,
    table: String,
    output: Option<Vec<usize>>,
    count: bool,
    distinct: bool,
    filters: Vec<Filter>,
    limit: Option<Term>,
}

#[derive(Debug)]
enum Plan {
    Insert(InsertPlan),
    Select(SelectPlan),
    Batch(Vec<InsertPlan>),
    Other(Statement),
}

/// The keyspace, table and columns of a SELECT's result.
pub type ResultColumns = (String, String, Vec<(String, CqlType)>);

/// A statement planned against the schema; prepared statements keep theirs by id.
#[derive(Debug)]
pub struct Prepared {
    pub id: Vec<u8>,
    plan: Plan,
    pub binds: Vec<Spec>,
    /// Columns of the result, for SELECTs.
    pub result: Option<ResultColumns>,
    /// Indexes of bind markers that carry the partition key, in key order.
    pub pk_indexes: Vec<i16>,
}

impl Prepared {
    /// Whether running it writes (an INSERT or a BATCH of them), which is what the capacity model charges for.
    pub fn is_write(&self) -> bool {
        matches!(self.plan, Plan::Insert(_) | Plan::Batch(_))
    }

    /// The table it writes to, if it is a single INSERT: with the bound partition key values this names a partition.
    pub fn insert_table(&self) -> Option<(&str, &str)> {
        match &self.plan {
            Plan::Insert(p) => Some((p.table.keyspace.as_str(), p.table.name.as_str())),
            _ => None,
        }
    }
}

/// A write ready to apply.
struct Mutation {
    table: Arc<Table>,
    row: Vec<Option<Cell>>,
    bytes: usize,
}

/// The shared engine every connection executes against.
#[derive(Debug)]
pub struct Engine {
    pub db: Database,
    prepared: RwLock<HashMap<Vec<u8>, Arc<Prepared>>>,
    pub faults: FaultHandle,
    pub ip: RwLock<IpAddr>,
    pub max_mutation_bytes: usize,
    /// The capacity model, when the node is to behave like one under load; `None` answers every write at once.
    pub capacity: Option<Capacity>,
}

impl Engine {
    pub fn new(db: Database, faults: FaultHandle, ip: IpAddr, max_mutation_bytes: usize) -> Engine {
        Engine {
            db,
            prepared: RwLock::default(),
            faults,
            ip: RwLock::new(ip),
            max_mutation_bytes,
            capacity: None,
        }
    }

    /// Charges writes to a capacity model.
    pub fn with_capacity(mut self, model: Option<CapacityModel>) -> Engine {
        self.capacity = model.map(Capacity::new);
        self
    }

    /// Forgets every prepared statement, as a restarted node does.
    pub fn forget_prepared(&self) {
        self.prepared
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Looks up a prepared statement.
    pub fn prepared(&self, id: &[u8]) -> Option<Arc<Prepared>> {
        self.prepared
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// Parses, plans and stores a statement; the id is stable for the same text and keyspace.
    pub fn prepare(&self, query: &str, keyspace: Option<&str>) -> Result<Arc<Prepared>, Failure> {
        let mut hasher = Sha256::new();
        hasher.update(keyspace.unwrap_or("").as_bytes());
        hasher.update([0]);
        hasher.update(query.as_bytes());
        let id = hasher.finalize()[..16].to_vec();
        if let Some(existing) = self.prepared(&id) {
            return Ok(existing);
        }
        let statement = parse::parse(query).map_err(Failure::Syntax)?;
        let prepared = Arc::new(self.plan(statement, keyspace, id.clone())?);
        self.prepared
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, prepared.clone());
        Ok(prepared)
    }

    /// Parses, plans and runs a statement sent as a simple QUERY.
    pub fn query(
        &self,
        query: &str,
        keyspace: Option<&str>,
        mut values: Vec<Value>,
    ) -> Result<Outcome, Failure> {
        let statement = parse::parse(query).map_err(Failure::Syntax)?;
        let prepared = self.plan(statement, keyspace, Vec::new())?;
        self.execute(&prepared.plan, &mut values)
    }

    fn resolve_keyspace<'a>(
        &self,
        table: &'a TableName,
        keyspace: Option<&'a str>,
    ) -> Result<&'a str, Failure> {
        table.keyspace.as_deref().or(keyspace).ok_or_else(|| {
            Failure::Invalid("No keyspace has been specified. USE a keyspace, or explicitly specify keyspace.tablename".into())
        })
    }

    fn user_table(&self, table: &TableName, keyspace: Option<&str>) -> Result<Arc<Table>, Failure> {
        let ks = self.resolve_keyspace(table, keyspace)?;
        if let Some(Err(e)) = self.system(ks, &table.name) {
            return Err(Failure::Invalid(e));
        }
        self.db
            .table(ks, &table.name)
            .ok_or_else(|| Failure::Invalid(format!("unconfigured table {}", table.name)))
    }

    fn system(&self, keyspace: &str, name: &str) -> Option<Result<Virtual, String>> {
        let ip = *self.ip.read().unwrap_or_else(|p| p.into_inner());
        self.db.system_table(keyspace, name, ip)
    }

    fn plan_insert(
        &self,
        table: &TableName,
        columns: &[String],
        values: &[Term],
        keyspace: Option<&str>,
        binds: &mut Vec<(usize, Spec)>,
    ) -> Result<InsertPlan, Failure> {
        let t = self.user_table(table, keyspace)?;
        let mut slots = Vec::with_capacity(columns.len());
        let mut seen = HashSet::new();
        for (name, term) in columns.iter().zip(values) {
            let i = t.column(name).ok_or_else(|| {
                Failure::Invalid(format!(
                    "Undefined column name {name} in table {}.{}",
                    t.keyspace, t.name
                ))
            })?;
            if !seen.insert(i) {
                return Err(Failure::Invalid(format!(
                    "Multiple definitions found for column {name}"
                )));
            }
            let ty = &t.columns[i].ty;
            slots.push((
                i,
                match term {
                    Term::Bind(b) => {
                        binds.push((
                            *b,
                            Spec {
                                keyspace: t.keyspace.clone(),
                                table: t.name.clone(),
                                name: name.clone(),
                                ty: ty.clone(),
                            },
                        ));
                        Slot::Bind(*b)
                    }
                    Term::Literal(l) => Slot::Fixed(ty.encode_literal(l).map_err(|e| {
                        Failure::Invalid(format!("Invalid value for column {name}: {e}"))
                    })?),
                },
            ));
        }
        for &k in t.partition_key.iter().chain(&t.clustering) {
            if !seen.contains(&k) {
                return Err(Failure::Invalid(format!(
                    "Some partition key parts are missing: {}",
                    t.columns[k].name
                )));
            }
        }
        Ok(InsertPlan { table: t, slots })
    }

    fn plan(
        &self,
        statement: Statement,
        keyspace: Option<&str>,
        id: Vec<u8>,
    ) -> Result<Prepared, Failure> {
        let mut binds: Vec<(usize, Spec)> = Vec::new();
        let mut result = None;
        let plan = match statement {
            Statement::Insert {
                table,
                columns,
                values,
            } => Plan::Insert(self.plan_insert(&table, &columns, &values, keyspace, &mut binds)?),
            Statement::Batch(inner) => {
                let mut plans = Vec::new();
                for s in inner {
                    let Statement::Insert {
                        table,
                        columns,
                        values,
                    } = s
                    else {
                        return Err(Failure::Invalid(
                            "only INSERT statements are supported inside a BATCH here".into(),
                        ));
                    };
                    plans.push(self.plan_insert(&table, &columns, &values, keyspace, &mut binds)?);
                }
                Plan::Batch(plans)
            }
            Statement::Select {
                table,
                selection,
                distinct,
                relations,
                limit,
            } => {
                let ks = self.resolve_keyspace(&table, keyspace)?.to_string();
                let source = match self.system(&ks, &table.name) {
                    Some(Ok(v)) => Source::System {
                        keyspace: ks.clone(),
                        name: table.name.clone(),
                        columns: v.columns,
                    },
                    Some(Err(e)) => return Err(Failure::Invalid(e)),
                    None => Source::Table(self.user_table(&table, keyspace)?),
                };
                let columns = source.columns();
                let find = |name: &str| {
                    columns.iter().position(|(c, _)| c == name).ok_or_else(|| {
                        Failure::Invalid(format!(
                            "Undefined column name {name} in table {ks}.{}",
                            table.name
                        ))
                    })
                };
                let (output, count) = match selection {
                    Selection::All => (None, false),
                    Selection::Count => (None, true),
                    Selection::Columns(names) => (
                        Some(
                            names
                                .iter()
                                .map(|n| find(n))
                                .collect::<Result<Vec<_>, _>>()?,
                        ),
                        false,
                    ),
                };
                if distinct {
                    // Cassandra answers DISTINCT only over partition key columns (and static ones, not modelled).
                    let keys: &[usize] = match &source {
                        Source::Table(t) => &t.partition_key,
                        Source::System { .. } => &[],
                    };
                    let selected: &[usize] = output.as_deref().unwrap_or(&[]);
                    if let Some(&bad) = selected.iter().find(|c| !keys.contains(c)) {
                        return Err(Failure::Invalid(format!(
                            "SELECT DISTINCT queries must only request partition key columns and/or static \
                             columns (not {})",
                            columns[bad].0
                        )));
                    }
                    if output.is_none() || count {
                        return Err(Failure::Invalid(
                            "SELECT DISTINCT here needs the partition key columns named".into(),
                        ));
                    }
                }
                let mut filters = Vec::new();
                for r in relations {
                    let column = find(&r.column)?;
                    let ty = columns[column].1.clone();
                    let spec = |ty: CqlType| Spec {
                        keyspace: ks.clone(),
                        table: table.name.clone(),
                        name: r.column.clone(),
                        ty,
                    };
                    match &r.rhs {
                        Rhs::One(Term::Bind(b)) if r.op == Op::In => {
                            binds.push((*b, spec(CqlType::List(Box::new(ty.clone())))))
                        }
                        Rhs::One(Term::Bind(b)) => binds.push((*b, spec(ty.clone()))),
                        Rhs::List(terms) => {
                            for t in terms {
                                if let Term::Bind(b) = t {
                                    binds.push((*b, spec(ty.clone())));
                                }
                            }
                        }
                        Rhs::One(Term::Literal(_)) => {}
                    }
                    filters.push(Filter {
                        column,
                        op: r.op,
                        rhs: r.rhs,
                    });
                }
                if let Some(Term::Bind(b)) = &limit {
                    binds.push((
                        *b,
                        Spec {
                            keyspace: ks.clone(),
                            table: table.name.clone(),
                            name: "[limit]".into(),
                            ty: CqlType::Int,
                        },
                    ));
                }
                let out_columns = if count {
                    vec![("count".to_string(), CqlType::Bigint)]
                } else {
                    match &output {
                        Some(idx) => idx.iter().map(|&i| columns[i].clone()).collect(),
                        None => columns.clone(),
                    }
                };
                result = Some((ks.clone(), table.name.clone(), out_columns));
                Plan::Select(SelectPlan {
                    source,
                    keyspace: ks,
                    table: table.name.clone(),
                    output,
                    count,
                    distinct,
                    filters,
                    limit,
                })
            }
            Statement::CreateTable {
                table,
                if_not_exists,
                columns,
                partition_key,
                clustering,
            } => {
                let ks = self.resolve_keyspace(&table, keyspace)?.to_string();
                let table = TableName {
                    keyspace: Some(ks),
                    name: table.name,
                };
                Plan::Other(Statement::CreateTable {
                    table,
                    if_not_exists,
                    columns,
                    partition_key,
                    clustering,
                })
            }
            Statement::Truncate(table) => {
                let ks = self.resolve_keyspace(&table, keyspace)?.to_string();
                Plan::Other(Statement::Truncate(TableName {
                    keyspace: Some(ks),
                    name: table.name,
                }))
            }
            Statement::DropTable { table, if_exists } => {
                let ks = self.resolve_keyspace(&table, keyspace)?.to_string();
                Plan::Other(Statement::DropTable {
                    table: TableName {
                        keyspace: Some(ks),
                        name: table.name,
                    },
                    if_exists,
                })
            }
            other => Plan::Other(other),
        };
        binds.sort_by_key(|(i, _)| *i);
        let pk_indexes = match &plan {
            Plan::Insert(p) => p
                .table
                .partition_key
                .iter()
                .filter_map(|k| {
                    p.slots
                        .iter()
                        .find(|(c, _)| c == k)
                        .and_then(|(_, s)| match s {
                            Slot::Bind(b) => Some(*b as i16),
                            Slot::Fixed(_) => None,
                        })
                })
                .collect(),
            _ => Vec::new(),
        };
        let pk_indexes = match &plan {
            Plan::Insert(p) if pk_indexes.len() == p.table.partition_key.len() => pk_indexes,
            _ => Vec::new(),
        };
        Ok(Prepared {
            id,
            plan,
            binds: binds.into_iter().map(|(_, s)| s).collect(),
            result,
            pk_indexes,
        })
    }

    /// Runs a prepared statement with its bound values.
    pub fn execute_prepared(
        &self,
        prepared: &Prepared,
        mut values: Vec<Value>,
    ) -> Result<Outcome, Failure> {
        self.execute(&prepared.plan, &mut values)
    }

    fn execute(&self, plan: &Plan, values: &mut [Value]) -> Result<Outcome, Failure> {
        match plan {
            Plan::Insert(p) => {
                let m = self.mutation(p, values)?;
                self.apply(vec![m], "SIMPLE")
            }
            Plan::Batch(plans) => {
                let ms = plans
                    .iter()
                    .map(|p| self.mutation(p, &mut *values))
                    .collect::<Result<Vec<_>, _>>()?;
                self.apply(ms, "UNLOGGED_BATCH")
            }
            Plan::Select(s) => self.select(s, values).map(Outcome::Rows),
            Plan::Other(statement) => self.ddl(statement),
        }
    }

    /// Runs a BATCH request: each item is a prepared statement or a query string with its values.
    pub fn batch(
        &self,
        items: Vec<(Arc<Prepared>, Vec<Value>)>,
        logged: bool,
    ) -> Result<Outcome, Failure> {
        let mut mutations = Vec::with_capacity(items.len());
        for (prepared, mut values) in items {
            match &prepared.plan {
                Plan::Insert(p) => mutations.push(self.mutation(p, &mut values)?),
                Plan::Batch(ps) => {
                    for p in ps {
                        mutations.push(self.mutation(p, &mut values)?);
                    }
                }
                _ => return Err(Failure::Invalid("Invalid statement in batch: only UPDATE, INSERT and DELETE statements are allowed.".into())),
            }
        }
        self.apply(mutations, if logged { "BATCH" } else { "UNLOGGED_BATCH" })
    }

    fn mutation(&self, plan: &InsertPlan, values: &mut [Value]) -> Result<Mutation, Failure> {
        let mut row: Vec<Option<Cell>> = vec![None; plan.table.columns.len()];
        let mut bytes = 0;
        for (column, slot) in &plan.slots {
            let cell = match slot {
                Slot::Fixed(cell) => Some(cell.clone()),
                // Each bind marker appears once in an INSERT, so its value can be moved, not copied.
                Slot::Bind(b) => match values
                    .get_mut(*b)
                    .map(|v| std::mem::replace(v, Value::NotSet))
                {
                    Some(Value::Some(v)) => {
                        let c = &plan.table.columns[*column];
                        c.ty.check(&v).map_err(|e| {
                            Failure::Invalid(format!("Invalid value for column {}: {e}", c.name))
                        })?;
                        Some(Some(v))
                    }
                    Some(Value::Null) => Some(None),
                    Some(Value::NotSet) => None,
                    None => {
                        return Err(Failure::Invalid(format!(
                            "There were {} markers(?) in CQL but {} bound variables",
                            plan.slots.len(),
                            values.len()
                        )))
                    }
                },
            };
            bytes += cell.as_ref().and_then(|c| c.as_ref()).map_or(0, Vec::len);
            row[*column] = cell;
        }
        Ok(Mutation {
            table: plan.table.clone(),
            row,
            bytes,
        })
    }

    fn apply(
        &self,
        mutations: Vec<Mutation>,
        write_type: &'static str,
    ) -> Result<Outcome, Failure> {
        let mut per_partition: HashMap<(*const Table, Vec<u8>), usize> = HashMap::new();
        let mut keys = Vec::with_capacity(mutations.len());
        let mut total = 0;
        for m in &mutations {
            let key = m.table.partition_of(&m.row).map_err(Failure::Invalid)?;
            *per_partition
                .entry((Arc::as_ptr(&m.table), key.clone()))
                .or_default() += m.bytes;
            keys.push(key);
            total += m.bytes;
        }
        if let Some(((t, _), size)) = per_partition
            .iter()
            .find(|(_, &size)| size > self.max_mutation_bytes)
        {
            // The pointer only identifies the table; find the Arc it came from to name it.
            let name = mutations
                .iter()
                .find(|m| Arc::as_ptr(&m.table) == *t)
                .map_or(String::new(), |m| {
                    format!("{}.{}", m.table.keyspace, m.table.name)
                });
            return Err(Failure::Invalid(format!(
                "Rejected an oversized mutation ({size} bytes) for table {name}: the limit is {} bytes",
                self.max_mutation_bytes
            )));
        }
        let mut warnings = Vec::new();
        if per_partition.len() > 1 {
            if total > BATCH_FAIL_BYTES {
                return Err(Failure::Invalid(format!(
                    "Batch too large: batch of {} partitions is of size {total}, exceeding specified threshold of {BATCH_FAIL_BYTES} by {}",
                    per_partition.len(),
                    total - BATCH_FAIL_BYTES
                )));
            }
            if total > BATCH_WARN_BYTES {
                warnings.push(format!(
                    "Batch for {} partitions is of size {total}, exceeding specified threshold of {BATCH_WARN_BYTES} by {}.",
                    per_partition.len(),
                    total - BATCH_WARN_BYTES
                ));
            }
        }
        if let Some(fault) = self.faults.next_write() {
            return Err(Failure::Write(fault, write_type));
        }
        for (m, key) in mutations.into_iter().zip(keys) {
            m.table.upsert_at(key, m.row).map_err(Failure::Invalid)?;
        }
        self.db.writes.fetch_add(1, Ordering::Relaxed);
        Ok(Outcome::Void { warnings })
    }

    fn select(&self, plan: &SelectPlan, values: &[Value]) -> Result<RowSet, Failure> {
        let columns = plan.source.columns();
        let encode = |term: &Term, ty: &CqlType| -> Result<Cell, Failure> {
            match term {
                Term::Bind(b) => match values.get(*b) {
                    Some(Value::Some(v)) => Ok(Some(v.clone())),
                    Some(_) => Ok(None),
                    None => Err(Failure::Invalid("not enough bound variables".into())),
                },
                Term::Literal(l) => ty.encode_literal(l).map_err(Failure::Invalid),
            }
        };
        // Resolve each filter to the set of acceptable values or a bound.
        let mut resolved: Vec<(usize, Op, Vec<Cell>)> = Vec::new();
        for f in &plan.filters {
            let ty = &columns[f.column].1;
            let cells = match (&f.rhs, f.op) {
                (Rhs::List(terms), _) => terms
                    .iter()
                    .map(|t| encode(t, ty))
                    .collect::<Result<Vec<_>, _>>()?,
                (Rhs::One(t @ Term::Bind(_)), Op::In) => {
                    split_list(encode(t, &CqlType::List(Box::new(ty.clone())))?).ok_or_else(
                        || {
                            Failure::Invalid(format!(
                                "Invalid list value for IN on {}",
                                columns[f.column].0
                            ))
                        },
                    )?
                }
                (Rhs::One(t), _) => vec![encode(t, ty)?],
            };
            resolved.push((f.column, f.op, cells));
        }
        let rows = match &plan.source {
            Source::System { keyspace, name, .. } => match self.system(keyspace, name) {
                Some(Ok(v)) => v.rows,
                Some(Err(e)) => return Err(Failure::Invalid(e)),
                None => Vec::new(),
            },
            Source::Table(t) => {
                let mut keys: Option<Vec<Vec<Option<Cell>>>> = Some(vec![Vec::new()]);
                for &k in &t.partition_key {
                    let Some(values) = resolved
                        .iter()
                        .find(|(c, op, _)| *c == k && matches!(op, Op::Eq | Op::In))
                        .map(|(_, _, v)| v)
                    else {
                        keys = None;
                        break;
                    };
                    keys = keys.map(|prefixes| {
                        prefixes
                            .into_iter()
                            .flat_map(|p| {
                                values.iter().map(move |v| {
                                    let mut p = p.clone();
                                    p.push(Some(v.clone()));
                                    p
                                })
                            })
                            .collect()
                    });
                }
                match keys {
                    Some(prefixes) => {
                        let mut partitions = Vec::new();
                        for prefix in prefixes {
                            let mut full = vec![None; t.columns.len()];
                            for (&k, v) in t.partition_key.iter().zip(prefix) {
                                full[k] = v;
                            }
                            if let Ok(key) = t.partition_of(&full) {
                                partitions.push(key);
                            }
                        }
                        t.rows(Some(&partitions))
                    }
                    None => t.rows(None),
                }
            }
        };
        let mut rows: Vec<Vec<Cell>> = rows
            .into_iter()
            .filter(|row| {
                resolved.iter().all(|(c, op, cells)| {
                    let ty = &columns[*c].1;
                    let have = ty.sort_key(row[*c].as_deref());
                    match op {
                        Op::Eq | Op::In => cells.iter().any(|v| ty.sort_key(v.as_deref()) == have),
                        Op::Lt => cells.iter().all(|v| have < ty.sort_key(v.as_deref())),
                        Op::Le => cells.iter().all(|v| have <= ty.sort_key(v.as_deref())),
                        Op::Gt => cells.iter().all(|v| have > ty.sort_key(v.as_deref())),
                        Op::Ge => cells.iter().all(|v| have >= ty.sort_key(v.as_deref())),
                    }
                })
            })
            .collect();
        if let (true, Some(idx)) = (plan.distinct, &plan.output) {
            let mut seen = HashSet::new();
            rows.retain(|r| seen.insert(idx.iter().map(|&i| r[i].clone()).collect::<Vec<_>>()));
        }
        if let Some(limit) = &plan.limit {
            let n = match encode(limit, &CqlType::Int)? {
                Some(b) if b.len() == 4 => i32::from_be_bytes([b[0], b[1], b[2], b[3]]),
                _ => return Err(Failure::Invalid("LIMIT must be an int".into())),
            };
            if n <= 0 {
                return Err(Failure::Invalid("LIMIT must be strictly positive".into()));
            }
            rows.truncate(n as usize);
        }
        if plan.count {
            return Ok(RowSet {
                keyspace: plan.keyspace.clone(),
                table: plan.table.clone(),
                columns: vec![("count".into(), CqlType::Bigint)],
                rows: vec![vec![Some((rows.len() as i64).to_be_bytes().to_vec())]],
            });
        }
        let (out_columns, rows) = match &plan.output {
            None => (columns, rows),
            Some(idx) => (
                idx.iter().map(|&i| columns[i].clone()).collect(),
                rows.into_iter()
                    .map(|r| idx.iter().map(|&i| r[i].clone()).collect())
                    .collect(),
            ),
        };
        Ok(RowSet {
            keyspace: plan.keyspace.clone(),
            table: plan.table.clone(),
            columns: out_columns,
            rows,
        })
    }

    fn ddl(&self, statement: &Statement) -> Result<Outcome, Failure> {
        let void = Ok(Outcome::Void {
            warnings: Vec::new(),
        });
        match statement {
            Statement::Use(ks) => {
                if self.db.has_keyspace(ks) || matches!(ks.as_str(), "system" | "system_schema") {
                    Ok(Outcome::SetKeyspace(ks.clone()))
                } else {
                    Err(Failure::Invalid(format!("Keyspace '{ks}' does not exist")))
                }
            }
            Statement::CreateKeyspace {
                name,
                if_not_exists,
                replication,
                durable_writes,
            } => {
                let replication = replication
                    .iter()
                    .map(|(k, v)| {
                        let v = if k == "class" && !v.contains('.') {
                            format!("org.apache.cassandra.locator.{v}")
                        } else {
                            v.clone()
                        };
                        (k.clone(), v)
                    })
                    .collect();
                self.db
                    .create_keyspace(
                        Keyspace {
                            name: name.clone(),
                            replication,
                            durable_writes: *durable_writes,
                        },
                        *if_not_exists,
                    )
                    .map_err(Failure::Invalid)?;
                void
            }
            Statement::CreateTable {
                table,
                if_not_exists,
                columns,
                partition_key,
                clustering,
            } => {
                let ks = self.resolve_keyspace(table, None)?;
                let t = Table::new(ks, &table.name, columns, partition_key, clustering)
                    .map_err(Failure::Invalid)?;
                self.db
                    .create_table(t, *if_not_exists)
                    .map_err(Failure::Invalid)?;
                void
            }
            Statement::Truncate(t) => {
                let table = self.user_table(t, None)?;
                table.truncate();
                void
            }
            Statement::DropTable { table, if_exists } => {
                let ks = self.resolve_keyspace(table, None)?;
                if !self.db.drop_table(ks, &table.name) && !if_exists {
                    return Err(Failure::Invalid(format!(
                        "Table '{ks}.{}' doesn't exist",
                        table.name
                    )));
                }
                void
            }
            Statement::DropKeyspace { name, if_exists } => {
                if !self.db.drop_keyspace(name) && !if_exists {
                    return Err(Failure::Invalid(format!("Keyspace '{name}' doesn't exist")));
                }
                void
            }
            Statement::Insert { .. } | Statement::Select { .. } | Statement::Batch(_) => {
                Err(Failure::Invalid("statement was not planned".into()))
            }
        }
    }
}

/// Splits a serialized list into its elements.
fn split_list(cell: Cell) -> Option<Vec<Cell>> {
    let bytes = cell?;
    let mut pos = 4;
    let n = i32::from_be_bytes(bytes.get(0..4)?.try_into().ok()?);
    let mut out = Vec::new();
    for _ in 0..n {
        let len = i32::from_be_bytes(bytes.get(pos..pos + 4)?.try_into().ok()?);
        pos += 4;
        if len < 0 {
            out.push(None);
        } else {
            out.push(Some(bytes.get(pos..pos + len as usize)?.to_vec()));
            pos += len as usize;
        }
    }
    Some(out)
}
