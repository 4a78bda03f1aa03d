//! SQL text → statements. sqlparser tokenizes and parses everything; the Flink DDL (computed
//! columns, `WATERMARK FOR`, `METADATA`, `WITH (...)` options) and `SET 'key' = 'value'` are
//! composed from its parser's primitives, and [`FlinkDialect`] extends its generic dialect
//! only to read `TABLE t` as a table-function argument (`TUMBLE(TABLE orders, ...)`).

use super::{Pos, SqlError};
use sqlparser::ast::{self, DataType, Expr, Ident, Spanned};
use sqlparser::dialect::{Dialect, GenericDialect};
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::Token;

/// The generic dialect, plus `TABLE <name>` as an expression (a table argument of a
/// windowing table function), read as `Expr::Prefixed { prefix: TABLE, value: name }`, and
/// `FOR SYSTEM_TIME AS OF` after a joined table.
#[derive(Debug, Default)]
pub struct FlinkDialect(GenericDialect);

impl Dialect for FlinkDialect {
    fn dialect(&self) -> std::any::TypeId {
        self.0.dialect()
    }

    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        self.0.is_delimited_identifier_start(ch)
    }

    fn is_identifier_start(&self, ch: char) -> bool {
        self.0.is_identifier_start(ch)
    }

    fn is_identifier_part(&self, ch: char) -> bool {
        self.0.is_identifier_part(ch)
    }

    /// `JOIN t FOR SYSTEM_TIME AS OF o.proc_time` (Flink's lookup join).
    fn supports_table_versioning(&self) -> bool {
        true
    }

    fn parse_prefix(&self, parser: &mut Parser) -> Option<Result<Expr, ParserError>> {
        let table =
            matches!(&parser.peek_token().token, Token::Word(w) if w.keyword == Keyword::TABLE);
        let named = matches!(&parser.peek_nth_token(1).token, Token::Word(_));
        if !(table && named) {
            return None;
        }
        let keyword = parser.next_token();
        Some(parser.parse_identifier().map(|name| Expr::Prefixed {
            prefix: Ident::with_span(keyword.span, "TABLE"),
            value: Box::new(Expr::Identifier(name)),
        }))
    }
}

/// One statement of a script.
#[derive(Debug, Clone)]
pub enum Statement {
    CreateTable(Box<TableDef>),
    Set {
        key: String,
        value: String,
        at: Pos,
    },
    /// `INSERT INTO ... SELECT ...`, or `EXPLAIN` of one.
    Insert {
        insert: Box<ast::Insert>,
        explain: bool,
        at: Pos,
    },
    /// `SELECT ...` on its own (the interactive client prints its rows).
    Query {
        query: Box<ast::Query>,
        explain: bool,
        at: Pos,
    },
    /// `CREATE [TEMPORARY] FUNCTION [IF NOT EXISTS] name AS 'path' [LANGUAGE WASM]`.
    CreateFunction {
        name: String,
        path: String,
        at: Pos,
        if_not_exists: bool,
    },
    /// `DROP TABLE [IF EXISTS] name` or `DROP [TEMPORARY] FUNCTION [IF EXISTS] name`.
    Drop {
        function: bool,
        name: String,
        if_exists: bool,
        at: Pos,
    },
    /// `ADD JAR '...'` (ignored: functions are Wasm components).
    AddJar {
        at: Pos,
    },
    /// `SHOW TABLES` or `SHOW FUNCTIONS`.
    Show {
        functions: bool,
        at: Pos,
    },
    /// `DESCRIBE name` (or `DESC name`).
    Describe {
        name: String,
        at: Pos,
    },
    /// `BEGIN STATEMENT SET` (or `EXECUTE STATEMENT SET BEGIN`).
    BeginSet {
        at: Pos,
    },
    /// `END` of a statement set.
    EndSet {
        at: Pos,
    },
}

/// `CREATE [TEMPORARY] TABLE name (columns, [WATERMARK ...]) WITH (options)`.
#[derive(Debug, Clone)]
pub struct TableDef {
    pub name: String,
    pub at: Pos,
    pub columns: Vec<ColumnDef>,
    pub watermark: Option<WatermarkDef>,
    /// `PRIMARY KEY (columns) NOT ENFORCED`, inline or as a table constraint.
    pub primary_key: Option<PrimaryKeyDef>,
    pub options: Vec<OptionDef>,
}

#[derive(Debug, Clone)]
pub struct ColumnDef {
    pub name: String,
    pub at: Pos,
    pub kind: ColumnKind,
    /// `NOT NULL` after the type.
    pub not_null: bool,
}

/// `[CONSTRAINT name] PRIMARY KEY (a, b) NOT ENFORCED`.
#[derive(Debug, Clone)]
pub struct PrimaryKeyDef {
    pub columns: Vec<(String, Pos)>,
    pub at: Pos,
}

#[derive(Debug, Clone)]
pub enum ColumnKind {
    /// A field of the record.
    Physical(DataType),
    /// `name AS expr`.
    Computed(Box<Expr>),
    /// `name TYPE METADATA [FROM 'key'] [VIRTUAL]`: the key (default: the column's name).
    Metadata(DataType, String),
}

/// `WATERMARK FOR column AS expr`.
#[derive(Debug, Clone)]
pub struct WatermarkDef {
    pub column: String,
    pub at: Pos,
    pub expr: Expr,
}

/// `'key' = 'value'` in `WITH (...)`.
#[derive(Debug, Clone)]
pub struct OptionDef {
    pub key: String,
    pub value: String,
    pub at: Pos,
}

/// Parses a whole script: statements separated by `;`.
pub fn parse_script(text: &str) -> Result<Vec<Statement>, SqlError> {
    let dialect = FlinkDialect::default();
    let mut parser = Parser::new(&dialect).try_with_sql(text)?;
    let mut statements = Vec::new();
    loop {
        while parser.consume_token(&Token::SemiColon) {}
        let next = parser.peek_token();
        let at = Pos::of(next.span);
        let keyword = match &next.token {
            Token::EOF => break,
            Token::Word(word) => word.keyword,
            other => {
                return Err(SqlError::invalid(
                    at,
                    format!("expected a statement, found `{other}`"),
                ));
            }
        };
        let statement = match keyword {
            Keyword::CREATE => create(&mut parser, at)?,
            Keyword::SET => set(&mut parser, at)?,
            Keyword::EXPLAIN => {
                parser.next_token();
                // Flink's `EXPLAIN PLAN FOR INSERT ...` is the same.
                let _ = parser.parse_keywords(&[Keyword::PLAN, Keyword::FOR]);
                if parser.peek_keyword(Keyword::SELECT) || parser.peek_keyword(Keyword::WITH) {
                    query(&mut parser, true)?
                } else if !parser.peek_keyword(Keyword::INSERT) {
                    let what = parser.peek_token();
                    return Err(SqlError::unsupported_because(
                        Pos::of(what.span),
                        format!("EXPLAIN of `{}`", what.token),
                        "EXPLAIN takes an INSERT INTO or a SELECT statement",
                    ));
                } else {
                    insert(&mut parser, true)?
                }
            }
            Keyword::INSERT => insert(&mut parser, false)?,
            Keyword::SELECT | Keyword::WITH => query(&mut parser, false)?,
            Keyword::DROP => drop_statement(&mut parser, at)?,
            Keyword::SHOW => {
                parser.next_token();
                if parse_word(&mut parser, "TABLES") {
                    Statement::Show {
                        functions: false,
                        at,
                    }
                } else if parse_word(&mut parser, "FUNCTIONS") {
                    Statement::Show {
                        functions: true,
                        at,
                    }
                } else {
                    let what = parser.peek_token();
                    return Err(SqlError::unsupported_because(
                        Pos::of(what.span),
                        format!("SHOW {}", what.token),
                        "SHOW TABLES and SHOW FUNCTIONS are",
                    ));
                }
            }
            Keyword::DESCRIBE | Keyword::DESC => {
                parser.next_token();
                let name = parser.parse_identifier()?;
                Statement::Describe {
                    name: name.value,
                    at,
                }
            }
            Keyword::BEGIN => {
                parser.next_token();
                if !(parse_word(&mut parser, "STATEMENT") && parser.parse_keyword(Keyword::SET)) {
                    return Err(SqlError::invalid(at, "expected BEGIN STATEMENT SET"));
                }
                Statement::BeginSet { at }
            }
            Keyword::EXECUTE => {
                parser.next_token();
                if !(parse_word(&mut parser, "STATEMENT")
                    && parser.parse_keyword(Keyword::SET)
                    && parser.parse_keyword(Keyword::BEGIN))
                {
                    return Err(SqlError::unsupported_because(
                        at,
                        "EXECUTE",
                        "EXECUTE STATEMENT SET BEGIN ... END is",
                    ));
                }
                // No `;` after BEGIN here.
                statements.push(Statement::BeginSet { at });
                continue;
            }
            Keyword::END => {
                parser.next_token();
                Statement::EndSet { at }
            }
            _ if parse_word(&mut parser, "ADD") => {
                if !parse_word(&mut parser, "JAR") {
                    return Err(SqlError::invalid(at, "expected ADD JAR '<path>'"));
                }
                parser.parse_literal_string()?;
                Statement::AddJar { at }
            }
            _ => {
                return Err(SqlError::unsupported_because(
                    at,
                    format!("the statement `{}`", next.token),
                    "a script has CREATE TABLE, CREATE FUNCTION, SET, INSERT INTO, SELECT, statement sets, DROP, SHOW, DESCRIBE and ADD JAR statements",
                ));
            }
        };
        statements.push(statement);
        if !parser.consume_token(&Token::SemiColon) && parser.peek_token().token != Token::EOF {
            let found = parser.peek_token();
            return Err(SqlError::invalid(
                Pos::of(found.span),
                format!("expected `;` after the statement, found `{}`", found.token),
            ));
        }
    }
    Ok(statements)
}

/// Whether the next token is the word `word` (a Flink word sqlparser has no keyword for);
/// consumes it if so.
fn parse_word(parser: &mut Parser, word: &str) -> bool {
    let is = matches!(&parser.peek_token().token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word));
    if is {
        parser.next_token();
    }
    is
}

fn insert(parser: &mut Parser, explain: bool) -> Result<Statement, SqlError> {
    let at = Pos::of(parser.peek_token().span);
    match parser.parse_statement()? {
        ast::Statement::Insert(insert) => Ok(Statement::Insert {
            insert: Box::new(insert),
            explain,
            at,
        }),
        other => Err(SqlError::unsupported(at, format!("`{other}`"))),
    }
}

fn query(parser: &mut Parser, explain: bool) -> Result<Statement, SqlError> {
    let at = Pos::of(parser.peek_token().span);
    Ok(Statement::Query {
        query: parser.parse_query()?,
        explain,
        at,
    })
}

fn drop_statement(parser: &mut Parser, at: Pos) -> Result<Statement, SqlError> {
    parser.expect_keyword(Keyword::DROP)?;
    let _ = parser.parse_keyword(Keyword::TEMPORARY);
    let _ = parse_word(parser, "SYSTEM");
    let function = if parser.parse_keyword(Keyword::TABLE) {
        false
    } else if parser.parse_keyword(Keyword::FUNCTION) {
        true
    } else {
        let what = parser.peek_token();
        return Err(SqlError::unsupported_because(
            Pos::of(what.span),
            format!("DROP {}", what.token),
            "DROP TABLE and DROP FUNCTION are",
        ));
    };
    let if_exists = parser.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
    let name = parser.parse_identifier()?;
    Ok(Statement::Drop {
        function,
        name: name.value,
        if_exists,
        at,
    })
}

fn create_function(parser: &mut Parser, at: Pos) -> Result<Statement, SqlError> {
    let if_not_exists = parser.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = parser.parse_identifier()?;
    parser.expect_keyword(Keyword::AS)?;
    let path = parser.parse_literal_string()?;
    if parser.parse_keyword(Keyword::LANGUAGE) {
        let language = parser.next_token();
        let wasm =
            matches!(&language.token, Token::Word(w) if w.value.eq_ignore_ascii_case("WASM"));
        if !wasm {
            return Err(SqlError::unsupported_because(
                Pos::of(language.span),
                format!("LANGUAGE {}", language.token),
                "functions are Wasm map components: LANGUAGE WASM",
            ));
        }
    }
    Ok(Statement::CreateFunction {
        name: name.value,
        path,
        at,
        if_not_exists,
    })
}

/// `SET 'key' = 'value'` (Flink's quoted form) or `SET key = value`.
fn set(parser: &mut Parser, at: Pos) -> Result<Statement, SqlError> {
    parser.expect_keyword(Keyword::SET)?;
    let text = |parser: &mut Parser| -> Result<String, SqlError> {
        let token = parser.next_token();
        match token.token {
            Token::SingleQuotedString(s) | Token::DoubleQuotedString(s) => Ok(s),
            Token::Word(_) | Token::Number(..) => {
                // An unquoted key (`a.b.c`) or value: its tokens up to `=`, `;` or the end.
                let mut text = token.token.to_string();
                while !matches!(
                    parser.peek_token().token,
                    Token::Eq | Token::SemiColon | Token::EOF
                ) {
                    text.push_str(&parser.next_token().token.to_string());
                }
                Ok(text)
            }
            other => Err(SqlError::invalid(
                Pos::of(token.span),
                format!("SET needs 'key' = 'value', found `{other}`"),
            )),
        }
    };
    let key = text(parser)?;
    parser.expect_token(&Token::Eq)?;
    let value = text(parser)?;
    Ok(Statement::Set { key, value, at })
}

fn create(parser: &mut Parser, at: Pos) -> Result<Statement, SqlError> {
    parser.expect_keyword(Keyword::CREATE)?;
    let _ = parser.parse_keyword(Keyword::TEMPORARY);
    let _ = parse_word(parser, "SYSTEM");
    if parser.parse_keyword(Keyword::FUNCTION) {
        return create_function(parser, at);
    }
    if !parser.parse_keyword(Keyword::TABLE) {
        let what = parser.peek_token();
        return Err(SqlError::unsupported_because(
            at,
            format!("CREATE {}", what.token),
            "CREATE TABLE and CREATE FUNCTION are",
        ));
    }
    let _ = parser.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = parser.parse_object_name(false)?;
    let name_at = Pos::of(name.span());
    let name = match name.0.last().and_then(|part| part.as_ident()) {
        Some(ident) if name.0.len() == 1 => ident.value.clone(),
        _ => {
            return Err(SqlError::unsupported_because(
                name_at,
                format!("the qualified table name `{name}`"),
                "catalogs and databases are not",
            ));
        }
    };
    parser.expect_token(&Token::LParen)?;
    let mut columns = Vec::new();
    let mut watermark = None;
    let mut primary_key = None;
    loop {
        let start = parser.peek_token();
        let start_at = Pos::of(start.span);
        if parse_word(parser, "WATERMARK") {
            parser.expect_keyword(Keyword::FOR)?;
            let column = parser.parse_identifier()?;
            parser.expect_keyword(Keyword::AS)?;
            let expr = parser.parse_expr()?;
            if watermark.is_some() {
                return Err(SqlError::invalid(
                    start_at,
                    format!("table `{name}` has a second WATERMARK"),
                ));
            }
            watermark = Some(WatermarkDef {
                column: column.value,
                at: start_at,
                expr,
            });
        } else if parser.peek_keyword(Keyword::PRIMARY) || parser.peek_keyword(Keyword::CONSTRAINT)
        {
            if parser.parse_keyword(Keyword::CONSTRAINT) {
                parser.parse_identifier()?;
            }
            parser.expect_keywords(&[Keyword::PRIMARY, Keyword::KEY])?;
            parser.expect_token(&Token::LParen)?;
            let mut key = Vec::new();
            loop {
                let column = parser.parse_identifier()?;
                key.push((column.value, Pos::of(column.span)));
                if !parser.consume_token(&Token::Comma) {
                    parser.expect_token(&Token::RParen)?;
                    break;
                }
            }
            not_enforced(parser, start_at)?;
            set_primary_key(&mut primary_key, key, start_at, &name)?;
        } else {
            let column = parser.parse_identifier()?;
            let column_at = Pos::of(column.span);
            let kind = if parser.parse_keyword(Keyword::AS) {
                ColumnKind::Computed(Box::new(parser.parse_expr()?))
            } else {
                let data_type = parser.parse_data_type()?;
                if parse_word(parser, "METADATA") {
                    let key = if parser.parse_keyword(Keyword::FROM) {
                        parser.parse_literal_string()?
                    } else {
                        column.value.clone()
                    };
                    parse_word(parser, "VIRTUAL");
                    ColumnKind::Metadata(data_type, key)
                } else {
                    ColumnKind::Physical(data_type)
                }
            };
            let mut not_null = false;
            loop {
                let at = Pos::of(parser.peek_token().span);
                if parser.parse_keywords(&[Keyword::NOT, Keyword::NULL]) {
                    not_null = true;
                } else if parser.parse_keyword(Keyword::NULL) {
                    not_null = false;
                } else if parser.parse_keywords(&[Keyword::PRIMARY, Keyword::KEY]) {
                    not_enforced(parser, at)?;
                    let key = vec![(column.value.clone(), column_at)];
                    set_primary_key(&mut primary_key, key, at, &name)?;
                } else {
                    break;
                }
            }
            if !matches!(parser.peek_token().token, Token::Comma | Token::RParen) {
                let found = parser.peek_token();
                return Err(SqlError::unsupported_because(
                    Pos::of(found.span),
                    format!(
                        "`{}` in the definition of column `{}`",
                        found.token, column.value
                    ),
                    "a column is a name and a type, `name AS expr` or `name TYPE METADATA`",
                ));
            }
            columns.push(ColumnDef {
                name: column.value,
                at: column_at,
                kind,
                not_null,
            });
        }
        if !parser.consume_token(&Token::Comma) {
            parser.expect_token(&Token::RParen)?;
            break;
        }
    }
    if parser.peek_keyword(Keyword::COMMENT) || parser.peek_keyword(Keyword::PARTITIONED) {
        let found = parser.peek_token();
        return Err(SqlError::unsupported(
            Pos::of(found.span),
            format!("`{}` in CREATE TABLE", found.token),
        ));
    }
    if !parser.parse_keyword(Keyword::WITH) {
        let found = parser.peek_token();
        return Err(SqlError::invalid(
            Pos::of(found.span),
            format!(
                "table `{name}` needs WITH ('connector' = ..., ...), found `{}`",
                found.token
            ),
        ));
    }
    parser.expect_token(&Token::LParen)?;
    let mut options = Vec::new();
    loop {
        let key_at = Pos::of(parser.peek_token().span);
        let key = parser.parse_literal_string()?;
        parser.expect_token(&Token::Eq)?;
        let value = parser.parse_literal_string()?;
        options.push(OptionDef {
            key,
            value,
            at: key_at,
        });
        if !parser.consume_token(&Token::Comma) {
            parser.expect_token(&Token::RParen)?;
            break;
        }
    }
    Ok(Statement::CreateTable(Box::new(TableDef {
        name,
        at: name_at,
        columns,
        watermark,
        primary_key,
        options,
    })))
}

/// `NOT ENFORCED` after a primary key: Flink's only mode (it does not own the data).
fn not_enforced(parser: &mut Parser, at: Pos) -> Result<(), SqlError> {
    if parser.parse_keyword(Keyword::NOT) && parse_word(parser, "ENFORCED") {
        return Ok(());
    }
    Err(SqlError::invalid(
        at,
        "a PRIMARY KEY must be NOT ENFORCED: the data is not owned by the job, so the only supported mode is NOT ENFORCED (as in Flink)",
    ))
}

fn set_primary_key(
    slot: &mut Option<PrimaryKeyDef>,
    columns: Vec<(String, Pos)>,
    at: Pos,
    table: &str,
) -> Result<(), SqlError> {
    if slot.is_some() {
        return Err(SqlError::invalid(
            at,
            format!("table `{table}` has a second PRIMARY KEY"),
        ));
    }
    *slot = Some(PrimaryKeyDef { columns, at });
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn reads_table_arguments_of_window_functions() {
        let statements = parse_script(
            "INSERT INTO out SELECT window_start, COUNT(*) FROM TABLE(TUMBLE(TABLE orders, DESCRIPTOR(ts), INTERVAL '15' SECOND)) GROUP BY window_start, window_end",
        )
        .unwrap();
        let [
            Statement::Insert {
                insert, explain, ..
            },
        ] = &statements[..]
        else {
            panic!("{statements:?}");
        };
        assert!(!explain);
        let text = insert.to_string();
        assert!(
            text.contains("TABLE(TUMBLE(TABLE orders, DESCRIPTOR(ts), INTERVAL '15' SECOND))"),
            "{text}"
        );
    }

    #[test]
    fn reads_flink_ddl_with_computed_columns_watermark_and_options() {
        let statements = parse_script(
            "CREATE TEMPORARY TABLE t (a STRING, ms BIGINT, ts AS TO_TIMESTAMP_LTZ(ms, 3), pt AS PROCTIME(),\n  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND) WITH ('connector' = 'print');\nSET 'pipeline.name' = 'x';",
        )
        .unwrap();
        let [
            Statement::CreateTable(table),
            Statement::Set { key, value, at },
        ] = &statements[..]
        else {
            panic!("{statements:?}");
        };
        assert_eq!(table.name, "t");
        assert_eq!(table.columns.len(), 4);
        assert!(matches!(table.columns[2].kind, ColumnKind::Computed(_)));
        let watermark = table.watermark.as_ref().unwrap();
        assert_eq!(watermark.column, "ts");
        assert_eq!(watermark.expr.to_string(), "ts - INTERVAL '5' SECOND");
        assert_eq!(table.options[0].key, "connector");
        assert_eq!(table.options[0].value, "print");
        assert_eq!((key.as_str(), value.as_str()), ("pipeline.name", "x"));
        assert_eq!(*at, Pos { line: 3, column: 1 });
    }

    #[test]
    fn an_unknown_statement_is_named_with_its_position() {
        let err = parse_script("SET 'a' = 'b';\n  UPDATE t SET a = 1;").unwrap_err();
        assert_eq!(
            err.to_string(),
            "2:3: the statement `UPDATE` is not supported yet (a script has CREATE TABLE, CREATE FUNCTION, SET, INSERT INTO, SELECT, statement sets, DROP, SHOW, DESCRIBE and ADD JAR statements)"
        );
    }
}
