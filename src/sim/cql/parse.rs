//! A parser for the subset of CQL that trimtab and the drivers send: USE, CREATE, INSERT, SELECT, BATCH.

use super::types::{CqlType, Literal};

/// A table reference, optionally qualified by its keyspace.
#[derive(Debug, Clone, PartialEq)]
pub struct TableName {
    pub keyspace: Option<String>,
    pub name: String,
}

/// One value position in a statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Term {
    /// The n-th `?` of the statement, counted from 0.
    Bind(usize),
    Literal(Literal),
}

/// What a SELECT returns.
#[derive(Debug, Clone, PartialEq)]
pub enum Selection {
    All,
    Columns(Vec<String>),
    Count,
}

/// A comparison in a WHERE clause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
    In,
}

/// The right-hand side of a relation: one term, or for IN a parenthesised list or one bind marker.
#[derive(Debug, Clone, PartialEq)]
pub enum Rhs {
    One(Term),
    List(Vec<Term>),
}

/// `column op rhs`.
#[derive(Debug, Clone, PartialEq)]
pub struct Relation {
    pub column: String,
    pub op: Op,
    pub rhs: Rhs,
}

/// A parsed statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    Use(String),
    CreateKeyspace {
        name: String,
        if_not_exists: bool,
        replication: Vec<(String, String)>,
        durable_writes: bool,
    },
    CreateTable {
        table: TableName,
        if_not_exists: bool,
        columns: Vec<(String, CqlType)>,
        partition_key: Vec<String>,
        clustering: Vec<String>,
    },
    Insert {
        table: TableName,
        columns: Vec<String>,
        values: Vec<Term>,
    },
    Select {
        table: TableName,
        selection: Selection,
        /// `SELECT DISTINCT`: one row per partition.
        distinct: bool,
        relations: Vec<Relation>,
        limit: Option<Term>,
    },
    Batch(Vec<Statement>),
    Truncate(TableName),
    DropTable {
        table: TableName,
        if_exists: bool,
    },
    DropKeyspace {
        name: String,
        if_exists: bool,
    },
}

#[cfg(test)]
impl Statement {
    /// The number of bind markers in the statement.
    pub fn bind_count(&self, counter: &mut usize) {
        let mut count_term = |t: &Term| {
            if let Term::Bind(i) = t {
                *counter = (*counter).max(i + 1);
            }
        };
        match self {
            Statement::Insert { values, .. } => values.iter().for_each(&mut count_term),
            Statement::Select {
                relations, limit, ..
            } => {
                for r in relations {
                    match &r.rhs {
                        Rhs::One(t) => count_term(t),
                        Rhs::List(ts) => ts.iter().for_each(&mut count_term),
                    }
                }
                if let Some(t) = limit {
                    count_term(t);
                }
            }
            Statement::Batch(inner) => inner.iter().for_each(|s| s.bind_count(counter)),
            _ => {}
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Quoted(String),
    Str(String),
    Number(String),
    Blob(Vec<u8>),
    Punct(&'static str),
    Bind,
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    const PUNCT: [&str; 17] = [
        "<=", ">=", "!=", "(", ")", ",", ";", "=", "<", ">", "*", ".", "{", "}", "[", "]", ":",
    ];
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '-' && chars.get(i + 1) == Some(&'-') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '\'' || c == '"' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err("unterminated string literal".into()),
                    Some(&q) if q == c && chars.get(i + 1) == Some(&c) => {
                        s.push(c);
                        i += 2;
                    }
                    Some(&q) if q == c => {
                        i += 1;
                        break;
                    }
                    Some(&other) => {
                        s.push(other);
                        i += 1;
                    }
                }
            }
            tokens.push(if c == '\'' {
                Token::Str(s)
            } else {
                Token::Quoted(s)
            });
        } else if c == '?' {
            tokens.push(Token::Bind);
            i += 1;
        } else if c == '0' && matches!(chars.get(i + 1), Some('x' | 'X')) {
            let start = i + 2;
            i = start;
            while i < chars.len() && chars[i].is_ascii_hexdigit() {
                i += 1;
            }
            let hex: String = chars[start..i].iter().collect();
            tokens.push(Token::Blob(
                hex::decode(&hex).map_err(|_| format!("bad blob literal 0x{hex}"))?,
            ));
        } else if c.is_ascii_digit()
            || (c == '-' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            let start = i;
            i += 1;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '.' | '-' | '+'))
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            if uuid::Uuid::parse_str(&word).is_ok() {
                tokens.push(Token::Word(word));
            } else {
                tokens.push(Token::Number(word));
            }
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_alphanumeric()
                    || chars[i] == '_'
                    || (chars[i] == '-' && looks_like_uuid(&chars[start..])))
            {
                i += 1;
            }
            tokens.push(Token::Word(chars[start..i].iter().collect()));
        } else if let Some(p) = PUNCT.iter().find(|p| {
            let pc: Vec<char> = p.chars().collect();
            chars[i..].starts_with(&pc)
        }) {
            tokens.push(Token::Punct(p));
            i += p.len();
        } else {
            return Err(format!("unexpected character '{c}'"));
        }
    }
    Ok(tokens)
}

fn looks_like_uuid(rest: &[char]) -> bool {
    rest.len() >= 36 && uuid::Uuid::parse_str(&rest[..36].iter().collect::<String>()).is_ok()
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    binds: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn at_keyword(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case(word))
    }

    fn eat_keyword(&mut self, word: &str) -> bool {
        let hit = self.at_keyword(word);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn keyword(&mut self, word: &str) -> Result<(), String> {
        if self.eat_keyword(word) {
            Ok(())
        } else {
            Err(format!(
                "expected {}, found {}",
                word.to_ascii_uppercase(),
                self.describe()
            ))
        }
    }

    fn eat_punct(&mut self, p: &str) -> bool {
        let hit = matches!(self.peek(), Some(Token::Punct(q)) if *q == p);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn punct(&mut self, p: &str) -> Result<(), String> {
        if self.eat_punct(p) {
            Ok(())
        } else {
            Err(format!("expected '{p}', found {}", self.describe()))
        }
    }

    fn describe(&self) -> String {
        match self.peek() {
            None => "end of statement".into(),
            Some(Token::Word(w) | Token::Number(w)) => format!("'{w}'"),
            Some(Token::Quoted(w)) => format!("\"{w}\""),
            Some(Token::Str(s)) => format!("string '{s}'"),
            Some(Token::Blob(_)) => "a blob literal".into(),
            Some(Token::Punct(p)) => format!("'{p}'"),
            Some(Token::Bind) => "'?'".into(),
        }
    }

    /// An identifier: unquoted ones are case-insensitive (lowered), quoted ones keep their case.
    fn ident(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Token::Word(w)) => Ok(w.to_ascii_lowercase()),
            Some(Token::Quoted(w)) => Ok(w),
            _ => {
                self.pos -= 1;
                Err(format!("expected an identifier, found {}", self.describe()))
            }
        }
    }

    fn table_name(&mut self) -> Result<TableName, String> {
        let first = self.ident()?;
        if self.eat_punct(".") {
            Ok(TableName {
                keyspace: Some(first),
                name: self.ident()?,
            })
        } else {
            Ok(TableName {
                keyspace: None,
                name: first,
            })
        }
    }

    fn if_not_exists(&mut self) -> Result<bool, String> {
        if self.eat_keyword("if") {
            self.keyword("not")?;
            self.keyword("exists")?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    fn literal(&mut self) -> Result<Literal, String> {
        match self.next() {
            Some(Token::Str(s)) => Ok(Literal::Str(s)),
            Some(Token::Blob(b)) => Ok(Literal::Blob(b)),
            Some(Token::Number(n)) => {
                if let Ok(i) = n.parse::<i64>() {
                    Ok(Literal::Int(i))
                } else {
                    n.parse::<f64>()
                        .map(Literal::Float)
                        .map_err(|_| format!("bad number '{n}'"))
                }
            }
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("null") => Ok(Literal::Null),
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("true") => Ok(Literal::Bool(true)),
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("false") => Ok(Literal::Bool(false)),
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("nan") => Ok(Literal::Float(f64::NAN)),
            Some(Token::Word(w)) => Ok(Literal::Word(w)),
            Some(Token::Punct("[")) => {
                let mut items = Vec::new();
                while !self.eat_punct("]") {
                    items.push(self.literal()?);
                    if !self.eat_punct(",") {
                        self.punct("]")?;
                        break;
                    }
                }
                Ok(Literal::List(items))
            }
            Some(Token::Punct("{")) => {
                let (mut pairs, mut items) = (Vec::new(), Vec::new());
                while !self.eat_punct("}") {
                    let key = self.literal()?;
                    if self.eat_punct(":") {
                        pairs.push((key, self.literal()?));
                    } else {
                        items.push(key);
                    }
                    if !self.eat_punct(",") {
                        self.punct("}")?;
                        break;
                    }
                }
                Ok(if items.is_empty() {
                    Literal::Map(pairs)
                } else {
                    Literal::List(items)
                })
            }
            _ => {
                self.pos -= 1;
                Err(format!("expected a value, found {}", self.describe()))
            }
        }
    }

    fn term(&mut self) -> Result<Term, String> {
        if matches!(self.peek(), Some(Token::Bind)) {
            self.pos += 1;
            self.binds += 1;
            return Ok(Term::Bind(self.binds - 1));
        }
        self.literal().map(Term::Literal)
    }

    fn ident_list(&mut self) -> Result<Vec<String>, String> {
        self.punct("(")?;
        let mut names = vec![self.ident()?];
        while self.eat_punct(",") {
            names.push(self.ident()?);
        }
        self.punct(")")?;
        Ok(names)
    }

    fn statement(&mut self) -> Result<Statement, String> {
        if self.eat_keyword("use") {
            return Ok(Statement::Use(self.ident()?));
        }
        if self.eat_keyword("create") {
            if self.eat_keyword("keyspace") {
                return self.create_keyspace();
            }
            if self.eat_keyword("table") || self.eat_keyword("columnfamily") {
                return self.create_table();
            }
            return Err(format!(
                "expected KEYSPACE or TABLE after CREATE, found {}",
                self.describe()
            ));
        }
        if self.eat_keyword("insert") {
            return self.insert();
        }
        if self.eat_keyword("select") {
            return self.select();
        }
        if self.eat_keyword("begin") {
            return self.batch();
        }
        if self.eat_keyword("truncate") {
            self.eat_keyword("table");
            return Ok(Statement::Truncate(self.table_name()?));
        }
        if self.eat_keyword("drop") {
            if self.eat_keyword("table") {
                let if_exists = self.eat_keyword("if") && self.eat_keyword("exists");
                return Ok(Statement::DropTable {
                    if_exists,
                    table: self.table_name()?,
                });
            }
            if self.eat_keyword("keyspace") {
                let if_exists = self.eat_keyword("if") && self.eat_keyword("exists");
                return Ok(Statement::DropKeyspace {
                    if_exists,
                    name: self.ident()?,
                });
            }
        }
        Err(format!(
            "unsupported statement starting at {}",
            self.describe()
        ))
    }

    fn create_keyspace(&mut self) -> Result<Statement, String> {
        let if_not_exists = self.if_not_exists()?;
        let name = self.ident()?;
        let (mut replication, mut durable_writes) = (Vec::new(), true);
        if self.eat_keyword("with") {
            loop {
                let option = self.ident()?;
                self.punct("=")?;
                let value = self.literal()?;
                match (option.as_str(), value) {
                    ("replication", Literal::Map(pairs)) => {
                        for (k, v) in pairs {
                            replication.push((literal_text(&k), literal_text(&v)));
                        }
                    }
                    ("durable_writes", Literal::Bool(b)) => durable_writes = b,
                    (other, _) => return Err(format!("unknown keyspace option '{other}'")),
                }
                if !self.eat_keyword("and") {
                    break;
                }
            }
        }
        Ok(Statement::CreateKeyspace {
            name,
            if_not_exists,
            replication,
            durable_writes,
        })
    }

    fn create_table(&mut self) -> Result<Statement, String> {
        let if_not_exists = self.if_not_exists()?;
        let table = self.table_name()?;
        self.punct("(")?;
        let (mut columns, mut partition_key, mut clustering) = (Vec::new(), Vec::new(), Vec::new());
        loop {
            if self.eat_keyword("primary") {
                self.keyword("key")?;
                self.punct("(")?;
                if matches!(self.peek(), Some(Token::Punct("("))) {
                    partition_key = self.ident_list()?;
                } else {
                    partition_key = vec![self.ident()?];
                }
                while self.eat_punct(",") {
                    clustering.push(self.ident()?);
                }
                self.punct(")")?;
            } else {
                let name = self.ident()?;
                let ty = self.type_text()?;
                let ty = CqlType::parse(&ty)
                    .ok_or_else(|| format!("unknown type '{ty}' for column {name}"))?;
                if self.eat_keyword("primary") {
                    self.keyword("key")?;
                    partition_key = vec![name.clone()];
                }
                self.eat_keyword("static");
                columns.push((name, ty));
            }
            if !self.eat_punct(",") {
                break;
            }
        }
        self.punct(")")?;
        // Table options (WITH CLUSTERING ORDER BY, compaction, ...) do not change what this server stores.
        self.pos = self.tokens.len();
        if partition_key.is_empty() {
            return Err(format!("table {} has no primary key", table.name));
        }
        for key in partition_key.iter().chain(&clustering) {
            if !columns.iter().any(|(c, _)| c == key) {
                return Err(format!("unknown primary key column '{key}'"));
            }
        }
        Ok(Statement::CreateTable {
            table,
            if_not_exists,
            columns,
            partition_key,
            clustering,
        })
    }

    /// Reads a type such as `map<text, frozen<list<int>>>` back into text.
    fn type_text(&mut self) -> Result<String, String> {
        let mut text = self.ident()?;
        if self.eat_punct("<") {
            text.push('<');
            text.push_str(&self.type_text()?);
            while self.eat_punct(",") {
                text.push(',');
                text.push_str(&self.type_text()?);
            }
            self.punct(">")?;
            text.push('>');
        }
        Ok(text)
    }

    fn insert(&mut self) -> Result<Statement, String> {
        self.keyword("into")?;
        let table = self.table_name()?;
        let columns = self.ident_list()?;
        self.keyword("values")?;
        self.punct("(")?;
        let mut values = vec![self.term()?];
        while self.eat_punct(",") {
            values.push(self.term()?);
        }
        self.punct(")")?;
        if columns.len() != values.len() {
            return Err(format!(
                "{} columns but {} values in INSERT",
                columns.len(),
                values.len()
            ));
        }
        self.if_not_exists()?;
        if self.eat_keyword("using") {
            loop {
                if !(self.eat_keyword("ttl") || self.eat_keyword("timestamp")) {
                    return Err(format!(
                        "expected TTL or TIMESTAMP after USING, found {}",
                        self.describe()
                    ));
                }
                self.term()?;
                if !self.eat_keyword("and") {
                    break;
                }
            }
        }
        Ok(Statement::Insert {
            table,
            columns,
            values,
        })
    }

    fn select(&mut self) -> Result<Statement, String> {
        self.eat_keyword("json");
        let distinct = self.eat_keyword("distinct");
        let selection = if self.eat_punct("*") {
            Selection::All
        } else if self.at_keyword("count")
            && matches!(self.tokens.get(self.pos + 1), Some(Token::Punct("(")))
        {
            self.pos += 2;
            if !self.eat_punct("*") {
                self.ident()?;
            }
            self.punct(")")?;
            Selection::Count
        } else {
            let mut names = vec![self.ident()?];
            while self.eat_punct(",") {
                names.push(self.ident()?);
            }
            Selection::Columns(names)
        };
        self.keyword("from")?;
        let table = self.table_name()?;
        let mut relations = Vec::new();
        if self.eat_keyword("where") {
            loop {
                let column = self.ident()?;
                let op = match self.next() {
                    Some(Token::Punct("=")) => Op::Eq,
                    Some(Token::Punct("<")) => Op::Lt,
                    Some(Token::Punct("<=")) => Op::Le,
                    Some(Token::Punct(">")) => Op::Gt,
                    Some(Token::Punct(">=")) => Op::Ge,
                    Some(Token::Word(w)) if w.eq_ignore_ascii_case("in") => Op::In,
                    _ => {
                        self.pos -= 1;
                        return Err(format!(
                            "expected a comparison after {column}, found {}",
                            self.describe()
                        ));
                    }
                };
                let rhs = if op == Op::In && self.eat_punct("(") {
                    let mut terms = Vec::new();
                    while !self.eat_punct(")") {
                        terms.push(self.term()?);
                        if !self.eat_punct(",") {
                            self.punct(")")?;
                            break;
                        }
                    }
                    Rhs::List(terms)
                } else {
                    Rhs::One(self.term()?)
                };
                relations.push(Relation { column, op, rhs });
                if !self.eat_keyword("and") {
                    break;
                }
            }
        }
        let mut limit = None;
        loop {
            if self.eat_keyword("limit") {
                limit = Some(self.term()?);
            } else if self.eat_keyword("allow") {
                self.keyword("filtering")?;
            } else if self.eat_keyword("using") {
                // `USING TIMEOUT 30s`, which Scylla-aware drivers append, changes nothing here.
                self.keyword("timeout")?;
                self.next();
            } else {
                break;
            }
        }
        Ok(Statement::Select {
            table,
            selection,
            distinct,
            relations,
            limit,
        })
    }

    fn batch(&mut self) -> Result<Statement, String> {
        let _ = self.eat_keyword("unlogged")
            || self.eat_keyword("logged")
            || self.eat_keyword("counter");
        self.keyword("batch")?;
        let mut inner = Vec::new();
        while !self.eat_keyword("apply") {
            if self.peek().is_none() {
                return Err("expected APPLY BATCH".into());
            }
            inner.push(self.statement()?);
            self.eat_punct(";");
        }
        self.keyword("batch")?;
        Ok(Statement::Batch(inner))
    }
}

fn literal_text(l: &Literal) -> String {
    match l {
        Literal::Str(s) | Literal::Word(s) => s.clone(),
        Literal::Int(i) => i.to_string(),
        Literal::Float(f) => f.to_string(),
        Literal::Bool(b) => b.to_string(),
        other => format!("{other:?}"),
    }
}

/// Parses one statement; the error names the statement and what was expected.
pub fn parse(text: &str) -> Result<Statement, String> {
    let describe = |e: String| format!("line 1: {e} in statement \"{}\"", text.trim());
    let tokens = tokenize(text).map_err(describe)?;
    let mut parser = Parser {
        tokens,
        pos: 0,
        binds: 0,
    };
    let statement = parser.statement().map_err(describe)?;
    parser.eat_punct(";");
    if parser.pos < parser.tokens.len() {
        return Err(describe(format!(
            "unexpected {} after the statement",
            parser.describe()
        )));
    }
    Ok(statement)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_create_table_with_compound_key() {
        let s = parse(
            "CREATE TABLE IF NOT EXISTS ks.events (stream text, day text, message_id text, payload text, \
             PRIMARY KEY ((stream, day), message_id)) WITH CLUSTERING ORDER BY (message_id ASC)",
        )
        .expect("parse");
        let Statement::CreateTable {
            table,
            if_not_exists,
            partition_key,
            clustering,
            columns,
        } = s
        else {
            panic!("not a create table: {s:?}")
        };
        assert_eq!(table.keyspace.as_deref(), Some("ks"));
        assert!(if_not_exists);
        assert_eq!(partition_key, vec!["stream", "day"]);
        assert_eq!(clustering, vec!["message_id"]);
        assert_eq!(columns.len(), 4);
    }

    #[test]
    fn numbers_bind_markers_in_order() {
        let s =
            parse("SELECT * FROM t WHERE a = ? AND b IN (?, 3) AND c > ? LIMIT ?").expect("parse");
        let mut n = 0;
        s.bind_count(&mut n);
        assert_eq!(n, 4);
    }

    #[test]
    fn syntax_errors_name_the_statement() {
        let e = parse("INSERT INTO t (a) VALUS (1)").unwrap_err();
        assert!(e.contains("VALUES") && e.contains("INSERT INTO t"), "{e}");
    }

    #[test]
    fn parses_keyspace_replication_and_batches() {
        let s = parse("CREATE KEYSPACE IF NOT EXISTS k WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}")
            .expect("parse");
        assert!(
            matches!(s, Statement::CreateKeyspace { ref replication, .. } if replication.len() == 2)
        );
        let b = parse("BEGIN UNLOGGED BATCH INSERT INTO t (a) VALUES (1); INSERT INTO t (a) VALUES (?); APPLY BATCH")
            .expect("parse");
        assert!(matches!(b, Statement::Batch(ref v) if v.len() == 2));
        assert_eq!(
            parse("SELECT * FROM system.local WHERE key='local'").map(|_| ()),
            Ok(())
        );
    }
}
