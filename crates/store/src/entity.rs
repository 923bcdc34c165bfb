//! The generic entity model: a table described by its columns, rows as ordered values, and the
//! change capture that turns two rows into SuperOffice's `Changes` list.
//!
//! Contact is the first entity described this way (see [`crate::contact`]); person and sale
//! follow the same shape, so the store, the outbox and the dispatcher never need to know which
//! entity an event came from.

use std::fmt;

/// 100-nanosecond ticks since the Unix epoch: the precision of .NET dates, stored as a BIGINT on
/// both backends.
pub type Ticks = i64;

/// Ticks per second.
pub const TICKS_PER_SECOND: i64 = 10_000_000;

/// What a column holds, and so how it is validated, stored and rendered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnKind {
    /// The primary key, assigned by the store.
    Key,
    /// A foreign key or integer (0 means "none" in SuperOffice).
    Int,
    /// An unsigned 16-bit value (`UShort`).
    UShort,
    /// A boolean stored as 0/1.
    Bool,
    /// A string of at most `max` characters.
    Text {
        /// Longest accepted value, in characters.
        max: usize,
    },
    /// A date-time in UTC.
    Date,
}

/// One column of an entity table.
#[derive(Clone, Copy, Debug)]
pub struct ColumnDef {
    /// Column name exactly as SuperOffice spells it (it appears verbatim in `Changes`).
    pub name: &'static str,
    /// What the column holds.
    pub kind: ColumnKind,
    /// Whether SQL NULL is allowed.
    pub nullable: bool,
    /// The property of the entity's API carrier that shows it (`OrgNr` for `orgNr` in
    /// `ContactEntity`); none for columns the carrier does not show.
    pub property: Option<&'static str>,
}

/// Whether two strings are equal, in a `const` (where `==` on `str` cannot be called).
const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The position of the column named `name`. Called in a `const` (as the carriers and the
/// listing do), a name that is not a column stops the build instead of reading NULL at run time.
pub const fn column_index(columns: &[ColumnDef], name: &str) -> usize {
    let mut i = 0;
    while i < columns.len() {
        if same(columns[i].name, name) {
            return i;
        }
        i += 1;
    }
    panic!("no column of that name")
}

/// The position of the column the carrier shows as `property` (exact spelling); in a `const`,
/// a property that no column declares stops the build.
pub const fn property_index(columns: &[ColumnDef], property: &str) -> usize {
    let mut i = 0;
    while i < columns.len() {
        if let Some(p) = columns[i].property {
            if same(p, property) {
                return i;
            }
        }
        i += 1;
    }
    panic!("no column shows that property")
}

/// One stored value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// An integer (also booleans and ushorts).
    Int(i64),
    /// A string.
    Text(String),
    /// A date-time, as ticks.
    Date(Ticks),
}

impl Value {
    /// The integer, with NULL read as 0 (SuperOffice's "none").
    pub fn as_i64(&self) -> i64 {
        match self {
            Value::Int(v) => *v,
            Value::Date(t) => *t,
            Value::Null | Value::Text(_) => 0,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    /// The ticks, if this is a date.
    pub fn as_ticks(&self) -> Option<Ticks> {
        match self {
            Value::Date(t) => Some(*t),
            _ => None,
        }
    }
}

/// A table that fires SuperOffice entity events.
#[derive(Debug)]
pub struct EntityDef {
    /// Lower-case entity name used in event names and the payload's `Entity`.
    pub entity: &'static str,
    /// SQL table name.
    pub table: &'static str,
    /// Every column, in the canonical order used for `Changes` (primary key first).
    pub columns: &'static [ColumnDef],
    /// Columns left out of a `created` event's `Changes`.
    pub not_in_created: &'static [&'static str],
    /// Columns the save maintains itself; listed in `Changes` of every change.
    pub bookkeeping: &'static [&'static str],
    /// `(source, derived)`: when `source` changes, the save recomputes `derived`, and it is listed
    /// in `Changes` even when its value came out the same (contact `name` → `soundEx`).
    pub derived: &'static [(&'static str, &'static str)],
    /// Columns that go into `FieldValues`, in payload order.
    pub field_values: &'static [&'static str],
    /// Date columns written with the server's offset in `FieldValues` (.NET Local kind); other
    /// dates are written without a suffix (Unspecified kind), as read from the database.
    pub local_dates: &'static [&'static str],
    /// Columns that go into `Values` on `deleted`, in payload order.
    pub deleted_values: &'static [&'static str],
}

impl EntityDef {
    /// Index of a column by its exact name.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// The column the carrier shows as `property`, in any case (`orgnr` finds `OrgNr`).
    pub fn by_property(&self, property: &str) -> Option<&'static ColumnDef> {
        self.columns
            .iter()
            .find(|c| c.property.is_some_and(|p| p.eq_ignore_ascii_case(property)))
    }

    /// The primary key column name.
    pub fn pk(&self) -> &'static str {
        self.columns[0].name
    }

    /// `Changes` of a `created` event.
    pub fn created_changes(&self) -> Vec<String> {
        self.columns
            .iter()
            .filter(|c| !self.not_in_created.contains(&c.name))
            .map(|c| c.name.to_owned())
            .collect()
    }

    /// `Changes` of a `changed`-shaped event between two rows, in canonical column order: the
    /// primary key, every column whose value differs, and the bookkeeping columns. Empty when
    /// nothing but bookkeeping differs (a save that changes nothing fires nothing).
    pub fn diff(&self, before: &Row, after: &Row) -> Vec<String> {
        // Column positions, not names, in the loops: this runs for every change, and comparing
        // every column's name with the bookkeeping names showed in profiles.
        let bookkeeping: Vec<usize> = self
            .bookkeeping
            .iter()
            .filter_map(|n| self.index(n))
            .collect();
        let touched: Vec<usize> = (1..self.columns.len())
            .filter(|&i| !bookkeeping.contains(&i) && before.values.get(i) != after.values.get(i))
            .collect();
        if touched.is_empty() {
            return Vec::new();
        }
        let derived: Vec<usize> = self
            .derived
            .iter()
            .filter(|(source, _)| self.index(source).is_some_and(|s| touched.contains(&s)))
            .filter_map(|(_, d)| self.index(d))
            .collect();
        self.columns
            .iter()
            .enumerate()
            .filter(|(i, _)| {
                *i == 0 || touched.contains(i) || bookkeeping.contains(i) || derived.contains(i)
            })
            .map(|(_, c)| c.name.to_owned())
            .collect()
    }
}

/// A row of an entity table: one value per column, in the entity's column order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// The values.
    pub values: Vec<Value>,
}

impl Row {
    /// A row of NULLs for `def`.
    pub fn empty(def: &EntityDef) -> Self {
        Row {
            values: vec![Value::Null; def.columns.len()],
        }
    }

    /// The value of a column. Column names are static, so an unknown one is a bug: debug builds
    /// (every test) stop on it; a release build reads NULL rather than take a request down.
    /// Where the name is a literal, [`column_index`] in a `const` with [`Row::at`] checks it
    /// when the code is built.
    pub fn get(&self, def: &EntityDef, name: &str) -> &Value {
        let index = def.index(name);
        debug_assert!(index.is_some(), "unknown column {name} of {}", def.table);
        self.at(index.unwrap_or(usize::MAX))
    }

    /// The value at position `i` (from [`column_index`] or [`property_index`]); NULL past the
    /// end, as for a row of another entity.
    pub fn at(&self, i: usize) -> &Value {
        static NULL: Value = Value::Null;
        self.values.get(i).unwrap_or(&NULL)
    }

    /// Sets the value at position `i`; past the end is a bug, as an unknown name is for `set`.
    pub fn set_at(&mut self, i: usize, value: Value) {
        if let Some(v) = self.values.get_mut(i) {
            *v = value;
        } else {
            debug_assert!(false, "no column at {i}");
        }
    }

    /// Sets a column; unknown names are ignored (definitions are static, so this is a bug).
    pub fn set(&mut self, def: &EntityDef, name: &str, value: Value) {
        if let Some(i) = def.index(name) {
            self.values[i] = value;
        } else {
            debug_assert!(false, "unknown column {name}");
        }
    }
}

/// A value that does not fit its column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The column (or API field) at fault.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for FieldError {}

/// Checks every value against its column: lengths (in characters), ranges, NULLs.
pub fn validate(def: &EntityDef, row: &Row) -> Result<(), FieldError> {
    for (col, value) in def.columns.iter().zip(&row.values) {
        let err = |message: String| FieldError {
            field: col.name.to_owned(),
            message,
        };
        match (col.kind, value) {
            (_, Value::Null) if col.nullable || col.kind == ColumnKind::Key => {}
            (_, Value::Null) => return Err(err("must not be null".into())),
            (ColumnKind::Text { max }, Value::Text(s)) => {
                let n = s.chars().count();
                if n > max {
                    return Err(err(format!(
                        "is {n} characters long; at most {max} are allowed"
                    )));
                }
            }
            (ColumnKind::UShort, Value::Int(v)) if !(0..=65535).contains(v) => {
                return Err(err(format!("{v} is out of range 0..=65535")));
            }
            (ColumnKind::Bool, Value::Int(v)) if !(0..=1).contains(v) => {
                return Err(err(format!("{v} is not a boolean")));
            }
            (ColumnKind::Int | ColumnKind::Key, Value::Int(v))
                if !(i32::MIN as i64..=i32::MAX as i64).contains(v) =>
            {
                return Err(err(format!("{v} is out of the int32 range")));
            }
            (
                ColumnKind::Int | ColumnKind::Key | ColumnKind::UShort | ColumnKind::Bool,
                Value::Int(_),
            )
            | (ColumnKind::Date, Value::Date(_)) => {}
            _ => return Err(err("has the wrong type".into())),
        }
    }
    Ok(())
}
