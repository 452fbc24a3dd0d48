//! What a statement must be to be planned: a read-only query, calling no table function that
//! reads files, with a bounded number of operators. Checked on the parsed statement, before
//! any planning.

use crate::error::AgentError;
use datafusion::sql::parser::Statement;

/// Refuses a statement with more than `limit` operators, counted on its tokens (no recursion:
/// this runs before anything walks the expression trees).
pub(super) fn ensure_few_operators(sql: &str, limit: usize) -> Result<(), AgentError> {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::keywords::Keyword;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize()
        .map_err(|error| AgentError::SqlSyntax(error.to_string()))?;
    let operators = tokens
        .iter()
        .filter(|token| match token {
            Token::Plus
            | Token::Minus
            | Token::Mul
            | Token::Div
            | Token::Mod
            | Token::StringConcat
            | Token::Eq
            | Token::Neq
            | Token::Lt
            | Token::Gt
            | Token::LtEq
            | Token::GtEq
            | Token::Ampersand
            | Token::Pipe
            | Token::Caret => true,
            Token::Word(word) => matches!(word.keyword, Keyword::AND | Keyword::OR | Keyword::NOT),
            _ => false,
        })
        .count();
    if operators > limit {
        return Err(AgentError::SqlPlanning(format!(
            "the statement has {operators} operators; at most {limit} are allowed (jobmanager.max_operators)"
        )));
    }
    Ok(())
}

/// Refuses anything but queries and questions about the catalog (`SHOW TABLES`, `SHOW
/// COLUMNS`, `DESCRIBE`): no DDL, DML, `COPY`, `SET` or transactions, and no table functions
/// other than the generators.
pub(super) fn ensure_read_only(statement: &Statement) -> Result<(), AgentError> {
    use datafusion::sql::sqlparser::ast::Statement as Sql;
    match statement {
        Statement::Statement(inner) => match inner.as_ref() {
            Sql::Query(_) => ensure_no_table_functions(inner),
            Sql::ShowTables { .. } | Sql::ShowColumns { .. } | Sql::ExplainTable { .. } => Ok(()),
            other => Err(AgentError::NotAllowed(statement_kind(&other.to_string()))),
        },
        Statement::Explain(explain) => ensure_read_only(&explain.statement),
        Statement::CreateExternalTable(_) => {
            Err(AgentError::NotAllowed("CREATE EXTERNAL TABLE".into()))
        }
        Statement::CopyTo(_) => Err(AgentError::NotAllowed("COPY".into())),
        Statement::Reset(_) => Err(AgentError::NotAllowed("RESET".into())),
    }
}

/// Table functions a query may call: they generate rows and read nothing (the error message of
/// `AgentError::TableFunction` lists them too).
const ALLOWED_TABLE_FUNCTIONS: [&str; 2] = ["generate_series", "range"];

/// Refuses calls of table functions that are not generators (`read_csv('/etc/passwd')` and
/// friends, should one ever be registered): tables come from the catalog only.
fn ensure_no_table_functions(
    statement: &datafusion::sql::sqlparser::ast::Statement,
) -> Result<(), AgentError> {
    use datafusion::sql::sqlparser::ast::{TableFactor, Visit, Visitor};
    use std::ops::ControlFlow;

    struct TableFunctions;
    impl Visitor for TableFunctions {
        type Break = String;
        fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<String> {
            let name = match factor {
                TableFactor::Table {
                    name,
                    args: Some(_),
                    ..
                } => name.to_string(),
                TableFactor::Function { name, .. } => name.to_string(),
                TableFactor::TableFunction { expr, .. } => expr.to_string(),
                _ => return ControlFlow::Continue(()),
            };
            let bare = name.trim_matches('"').to_ascii_lowercase();
            if ALLOWED_TABLE_FUNCTIONS.contains(&bare.as_str()) {
                ControlFlow::Continue(())
            } else {
                ControlFlow::Break(name.chars().take(64).collect())
            }
        }
    }
    match statement.visit(&mut TableFunctions) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(name) => Err(AgentError::TableFunction(name)),
    }
}

/// Returns the leading keywords of a statement, for error messages that do not echo data.
fn statement_kind(text: &str) -> String {
    text.split_whitespace()
        .take_while(|word| word.chars().all(|c| c.is_ascii_alphabetic()))
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
        .to_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::parser::DFParser;

    fn classify(sql: &str) -> Result<(), AgentError> {
        let statement = DFParser::parse_sql(sql).unwrap().pop_front().unwrap();
        ensure_read_only(&statement)
    }

    #[test]
    fn only_queries_pass() {
        assert!(classify("SELECT 1").is_ok());
        assert!(classify("WITH t AS (SELECT 1 AS a) SELECT a FROM t").is_ok());
        assert!(classify("EXPLAIN SELECT 1").is_ok());
        assert!(classify("SELECT * FROM generate_series(1, 10)").is_ok());
        assert!(classify("SELECT * FROM range(3) r JOIN nation ON true").is_ok());
        for sql in [
            "SHOW TABLES",
            "SHOW COLUMNS FROM nation",
            "DESCRIBE nation",
            "DESC t",
        ] {
            assert!(classify(sql).is_ok(), "{sql}");
        }
        for sql in [
            "CREATE TABLE t (a INT)",
            "INSERT INTO t VALUES (1)",
            "DROP TABLE t",
            "COPY (SELECT 1) TO '/tmp/x.csv'",
            "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
            "SET datafusion.execution.batch_size = 1",
            "SELECT * FROM read_csv('../../etc/passwd')",
            "SELECT * FROM nation JOIN read_parquet('/data/x') ON true",
            "WITH t AS (SELECT * FROM read_json('/etc/shadow')) SELECT * FROM t",
            "SELECT * FROM (SELECT * FROM \"read_csv\"('/x')) s",
            "EXPLAIN SELECT * FROM read_csv('/etc/passwd')",
            "EXPLAIN DROP TABLE t",
            "SHOW ALL",
            "SHOW CREATE TABLE nation",
        ] {
            let error = classify(sql).unwrap_err();
            assert_eq!(
                error.code(),
                flotilla_protocol::ErrorCode::NotAllowed,
                "{sql}"
            );
        }
    }

    #[test]
    fn statement_kind_keeps_keywords_only() {
        assert_eq!(statement_kind("insert into t values (1)"), "INSERT INTO");
        assert_eq!(statement_kind("DROP TABLE secret_name"), "DROP TABLE");
        assert_eq!(statement_kind("SET x = 1"), "SET X");
    }
}
