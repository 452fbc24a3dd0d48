//! `GetXdbcTypeInfo`: the SQL types a statement can use, as JDBC's `getTypeInfo()` (which SQL
//! tools such as DBeaver call) reports them.

use arrow_flight::sql::metadata::{XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder};
use arrow_flight::sql::{Nullable, Searchable, XdbcDataType, XdbcDatetimeSubcode};

/// A type's name, XDBC type, column size (precision), literal quote and datetime subcode.
type SqlType = (
    &'static str,
    XdbcDataType,
    Option<i32>,
    Option<&'static str>,
    Option<XdbcDatetimeSubcode>,
);

/// The types of DataFusion's SQL.
const TYPES: [SqlType; 11] = [
    ("BOOLEAN", XdbcDataType::XdbcBit, Some(1), None, None),
    ("TINYINT", XdbcDataType::XdbcTinyint, Some(3), None, None),
    ("SMALLINT", XdbcDataType::XdbcSmallint, Some(5), None, None),
    ("INTEGER", XdbcDataType::XdbcInteger, Some(10), None, None),
    ("BIGINT", XdbcDataType::XdbcBigint, Some(19), None, None),
    ("REAL", XdbcDataType::XdbcReal, Some(7), None, None),
    ("DOUBLE", XdbcDataType::XdbcDouble, Some(15), None, None),
    ("DECIMAL", XdbcDataType::XdbcDecimal, Some(38), None, None),
    ("VARCHAR", XdbcDataType::XdbcVarchar, None, Some("'"), None),
    (
        "DATE",
        XdbcDataType::XdbcDate,
        Some(10),
        Some("'"),
        // ODBC's SQL_CODE_DATE (1); prost keeps only the first name of that value.
        Some(XdbcDatetimeSubcode::XdbcSubcodeYear),
    ),
    (
        "TIMESTAMP",
        XdbcDataType::XdbcTimestamp,
        Some(29),
        Some("'"),
        Some(XdbcDatetimeSubcode::XdbcSubcodeTimestamp),
    ),
];

/// The answer to every `GetXdbcTypeInfo`, filtered by its `data_type` there.
pub(super) fn xdbc_types() -> anyhow::Result<XdbcTypeInfoData> {
    let mut builder = XdbcTypeInfoDataBuilder::new();
    for (name, data_type, column_size, quote, subcode) in TYPES {
        let numeric = quote.is_none() && data_type != XdbcDataType::XdbcBit;
        let sql_data_type = if subcode.is_some() {
            XdbcDataType::XdbcDatetime
        } else {
            data_type
        };
        builder.append(XdbcTypeInfo {
            type_name: name.into(),
            data_type,
            column_size,
            literal_prefix: quote.map(Into::into),
            literal_suffix: quote.map(Into::into),
            create_params: (data_type == XdbcDataType::XdbcDecimal)
                .then(|| vec!["precision".into(), "scale".into()]),
            nullable: Nullable::NullabilityNullable,
            case_sensitive: data_type == XdbcDataType::XdbcVarchar,
            searchable: Searchable::Full,
            unsigned_attribute: numeric.then_some(false),
            fixed_prec_scale: data_type == XdbcDataType::XdbcDecimal,
            auto_increment: numeric.then_some(false),
            local_type_name: Some(name.into()),
            minimum_scale: (data_type == XdbcDataType::XdbcDecimal).then_some(0),
            maximum_scale: (data_type == XdbcDataType::XdbcDecimal).then_some(38),
            sql_data_type,
            datetime_subcode: subcode,
            num_prec_radix: numeric.then_some(10),
            interval_precision: None,
        });
    }
    Ok(builder.build()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_flight::sql::CommandGetXdbcTypeInfo;

    #[test]
    fn every_type_is_listed_and_a_filter_picks_one() {
        let types = xdbc_types().unwrap();
        let all = CommandGetXdbcTypeInfo { data_type: None }
            .into_builder(&types)
            .build()
            .unwrap();
        assert_eq!(all.num_rows(), TYPES.len());
        let bigint = CommandGetXdbcTypeInfo {
            data_type: Some(XdbcDataType::XdbcBigint as i32),
        }
        .into_builder(&types)
        .build()
        .unwrap();
        assert_eq!(bigint.num_rows(), 1);
    }
}
