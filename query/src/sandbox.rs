//! What SQL is allowed: one query, nothing else. Checked on the parsed statement
//! before DataFusion plans it, so each refusal names the kind of statement.

use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::Statement;

/// Why a statement is not run. The message is meant for the person who wrote it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("SQL syntax error: {0}")]
    Syntax(String),
    #[error("expected one SQL statement, found {0}")]
    StatementCount(usize),
    #[error(
        "{0} is not allowed: the SQL endpoint is read-only and runs queries (SELECT, WITH, VALUES, EXPLAIN, SHOW, DESCRIBE) only"
    )]
    Forbidden(&'static str),
}

/// Accepts exactly one read-only query.
pub fn check(sql: &str) -> Result<(), Refusal> {
    let statements = DFParser::parse_sql(sql).map_err(|e| Refusal::Syntax(e.to_string()))?;
    if statements.len() != 1 {
        return Err(Refusal::StatementCount(statements.len()));
    }
    match &statements[0] {
        DfStatement::Statement(statement) => check_statement(statement),
        DfStatement::Explain(explain) => match explain.statement.as_ref() {
            DfStatement::Statement(statement) => check_statement(statement),
            _ => Err(Refusal::Forbidden("EXPLAIN of this statement")),
        },
        DfStatement::CreateExternalTable(_) => Err(Refusal::Forbidden("CREATE EXTERNAL TABLE")),
        DfStatement::CopyTo(_) => Err(Refusal::Forbidden("COPY")),
        DfStatement::Reset(_) => Err(Refusal::Forbidden("RESET")),
    }
}

fn check_statement(statement: &Statement) -> Result<(), Refusal> {
    let kind = match statement {
        Statement::Query(_)
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. }
        | Statement::ExplainTable { .. } => return Ok(()),
        Statement::Insert(_) => "INSERT",
        Statement::Update { .. } => "UPDATE",
        Statement::Delete(_) => "DELETE",
        Statement::Merge { .. } => "MERGE",
        Statement::Truncate { .. } => "TRUNCATE",
        Statement::Copy { .. } | Statement::CopyIntoSnowflake { .. } => "COPY",
        Statement::CreateTable(_) => "CREATE TABLE",
        Statement::CreateView { .. } => "CREATE VIEW",
        Statement::CreateSchema { .. } | Statement::CreateDatabase { .. } => "CREATE SCHEMA",
        Statement::CreateFunction(_) => "CREATE FUNCTION",
        Statement::CreateIndex(_) => "CREATE INDEX",
        Statement::Drop { .. } | Statement::DropFunction { .. } => "DROP",
        Statement::AlterTable { .. } => "ALTER",
        Statement::Set(_) => "SET",
        Statement::Prepare { .. } | Statement::Execute { .. } | Statement::Deallocate { .. } => {
            "PREPARE/EXECUTE"
        }
        Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. } => "a transaction",
        Statement::AttachDatabase { .. } | Statement::AttachDuckDBDatabase { .. } => "ATTACH",
        Statement::Install { .. } | Statement::Load { .. } => "INSTALL/LOAD",
        _ => "this kind of statement",
    };
    Err(Refusal::Forbidden(kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_pass() {
        assert_eq!(check("SELECT 1"), Ok(()));
        assert_eq!(check("WITH t AS (SELECT 1 AS x) SELECT x FROM t"), Ok(()));
        assert_eq!(check("EXPLAIN SELECT 1"), Ok(()));
    }

    #[test]
    fn everything_else_is_refused_by_name() {
        let cases = [
            ("INSERT INTO spans VALUES (1)", "INSERT"),
            ("DELETE FROM spans", "DELETE"),
            ("UPDATE spans SET name = 'x'", "UPDATE"),
            ("CREATE TABLE t (x INT)", "CREATE TABLE"),
            ("CREATE VIEW v AS SELECT 1", "CREATE VIEW"),
            ("DROP TABLE spans", "DROP"),
            (
                "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '/etc'",
                "CREATE EXTERNAL TABLE",
            ),
            ("COPY (SELECT 1) TO '/tmp/x.parquet'", "COPY"),
            ("SET datafusion.execution.batch_size = 1", "SET"),
            ("EXPLAIN DELETE FROM spans", "DELETE"),
        ];
        for (sql, kind) in cases {
            assert_eq!(check(sql), Err(Refusal::Forbidden(kind)), "{sql}");
        }
        assert_eq!(check("SELECT 1; SELECT 2"), Err(Refusal::StatementCount(2)));
        assert!(matches!(check("SELEC 1"), Err(Refusal::Syntax(_))));
    }
}
