//! sqlparser expressions → [`Typed`] trees, type-checked against the columns in scope.
//! Unknown columns and functions and type mismatches are errors naming the construct and
//! where it starts.

use super::{BinOp, Builtin, ExprError, Node, Type, Typed, Value};
use sqlparser::ast::{
    self, BinaryOperator, CastKind, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Spanned,
    TrimWhereField, UnaryOperator,
};
use sqlparser::tokenizer::Span;

/// What an expression may read: the columns (with their declared types) and the Wasm
/// functions; collects the column slots and functions the compiled trees use.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// Declared columns, by name (matched case-insensitively).
    declared: Vec<(String, Type)>,
    /// Whether a column that is not declared may be read (typed `ANY`): TOML stages.
    open: bool,
    /// What the table is called, for messages.
    table: String,
    /// Wasm functions that may be called, by name.
    functions: Vec<String>,
    /// The column slots the trees read: name and type.
    pub columns: Vec<(String, Type)>,
    /// The Wasm functions the trees call (indexes into `functions`), in slot order.
    pub udfs: Vec<String>,
}

impl Scope {
    /// Only the declared columns of `table` may be read.
    pub fn closed(table: &str, declared: Vec<(String, Type)>) -> Self {
        Scope {
            declared,
            table: table.to_owned(),
            ..Scope::default()
        }
    }

    /// Any column may be read; the declared ones have their types, the others `ANY`.
    pub fn open(declared: Vec<(String, Type)>) -> Self {
        Scope {
            declared,
            open: true,
            ..Scope::default()
        }
    }

    /// The column `qualifier.name` reads: one named `qualifier.name` when the scope declares
    /// one (a SQL lookup join's `r.key`: the table's key, null on a LEFT JOIN's miss), else
    /// `name`.
    fn qualified(&self, qualifier: &str, name: &str) -> String {
        let dotted = format!("{qualifier}.{name}");
        match self
            .declared
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(&dotted))
        {
            true => dotted,
            false => name.to_owned(),
        }
    }

    /// Wasm functions that may be called by name.
    pub fn with_functions(mut self, names: impl IntoIterator<Item = String>) -> Self {
        self.functions = names.into_iter().collect();
        self
    }

    fn column(&mut self, name: &str, span: Span) -> Result<Typed, ExprError> {
        let found = self
            .declared
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .cloned();
        let (name, ty) = match found {
            Some(column) => column,
            None if self.open => (name.to_owned(), Type::Any),
            None => {
                let names: Vec<&str> = self.declared.iter().map(|(n, _)| n.as_str()).collect();
                return Err(ExprError::invalid(
                    span,
                    format!(
                        "table `{}` has no column `{name}` (it has {})",
                        self.table,
                        names.join(", ")
                    ),
                ));
            }
        };
        let slot = match self.columns.iter().position(|(n, _)| *n == name) {
            Some(slot) => slot,
            None => {
                self.columns.push((name, ty));
                self.columns.len() - 1
            }
        };
        Ok(Typed {
            node: Node::Column(slot),
            ty,
            span,
        })
    }

    fn udf(&mut self, name: &str) -> Option<usize> {
        let name = self
            .functions
            .iter()
            .find(|f| f.eq_ignore_ascii_case(name))?
            .clone();
        Some(match self.udfs.iter().position(|u| *u == name) {
            Some(slot) => slot,
            None => {
                self.udfs.push(name);
                self.udfs.len() - 1
            }
        })
    }
}

fn typed(node: Node, ty: Type, span: Span) -> Typed {
    Typed { node, ty, span }
}

fn mismatch(what: &str, e: &Typed, wanted: &str) -> ExprError {
    ExprError::invalid(
        e.span,
        format!("{what} needs {wanted}, but this is {}", e.ty),
    )
}

/// Compiles `expr`, reading columns and functions from `scope`.
pub fn compile(expr: &Expr, scope: &mut Scope) -> Result<Typed, ExprError> {
    let span = expr.span();
    let boxed = |e: &Expr, scope: &mut Scope| compile(e, scope).map(Box::new);
    Ok(match expr {
        Expr::Identifier(ident) => scope.column(&ident.value, ident.span)?,
        Expr::CompoundIdentifier(parts) => match parts.last() {
            // `t.col`: the one table in scope (or a lookup join's key, read apart).
            Some(last) if parts.len() == 2 => {
                let name = scope.qualified(&parts[0].value, &last.value);
                scope.column(&name, last.span)?
            }
            _ => return Err(ExprError::unsupported(span, format!("the name `{expr}`"))),
        },
        Expr::Nested(inner) => compile(inner, scope)?,
        Expr::Value(value) => literal(&value.value, span)?,
        Expr::TypedString(typed_string) => {
            let text = match &typed_string.value.value {
                ast::Value::SingleQuotedString(s) => s.clone(),
                other => other.to_string(),
            };
            let ty = Type::of_sql(&typed_string.data_type.to_string())
                .ok_or_else(|| ExprError::unsupported(span, format!("the literal `{expr}`")))?;
            let value = Value::Text(text)
                .cast(ty)
                .map_err(|reason| ExprError::invalid(span, reason))?;
            typed(Node::Literal(value), ty, span)
        }
        Expr::UnaryOp { op, expr: inner } => {
            let arg = boxed(inner, scope)?;
            match op {
                UnaryOperator::Minus => {
                    if !arg.ty.is_numeric() {
                        return Err(mismatch("`-`", &arg, "a number"));
                    }
                    let ty = arg.ty;
                    typed(Node::Neg(arg), ty, span)
                }
                UnaryOperator::Plus => *arg,
                UnaryOperator::Not => {
                    if !arg.ty.is_boolean() {
                        return Err(mismatch("NOT", &arg, "a BOOLEAN"));
                    }
                    typed(Node::Not(arg), Type::Boolean, span)
                }
                other => {
                    return Err(ExprError::unsupported(
                        span,
                        format!("the operator `{other}`"),
                    ));
                }
            }
        }
        Expr::BinaryOp { left, op, right } => {
            let (l, r) = (boxed(left, scope)?, boxed(right, scope)?);
            binary(op, l, r, span)?
        }
        Expr::IsNull(inner) => typed(
            Node::IsNull(boxed(inner, scope)?, false),
            Type::Boolean,
            span,
        ),
        Expr::IsNotNull(inner) => typed(
            Node::IsNull(boxed(inner, scope)?, true),
            Type::Boolean,
            span,
        ),
        Expr::In {
            expr: inner,
            target,
            negated,
            ..
        } => {
            let ast::InTarget::List(list) = target else {
                return Err(ExprError::unsupported(span, "IN with a subquery"));
            };
            let arg = boxed(inner, scope)?;
            let mut items = Vec::with_capacity(list.len());
            for item in list {
                let item = compile(item, scope)?;
                if !arg.ty.comparable(item.ty) {
                    return Err(ExprError::invalid(
                        item.span,
                        format!("IN: cannot compare {} with {}", arg.ty, item.ty),
                    ));
                }
                items.push(item);
            }
            typed(Node::In(arg, items, *negated), Type::Boolean, span)
        }
        Expr::Between {
            expr: inner,
            negated,
            low,
            high,
        } => {
            let (arg, low, high) = (
                boxed(inner, scope)?,
                boxed(low, scope)?,
                boxed(high, scope)?,
            );
            for bound in [&low, &high] {
                if !arg.ty.comparable(bound.ty) {
                    return Err(ExprError::invalid(
                        bound.span,
                        format!("BETWEEN: cannot compare {} with {}", arg.ty, bound.ty),
                    ));
                }
            }
            typed(Node::Between(arg, low, high, *negated), Type::Boolean, span)
        }
        Expr::Like {
            negated,
            any: false,
            expr: inner,
            pattern,
            escape_char,
        } => {
            let (arg, pattern) = (boxed(inner, scope)?, boxed(pattern, scope)?);
            for e in [&arg, &pattern] {
                if !e.ty.is_textual() {
                    return Err(mismatch("LIKE", e, "a STRING"));
                }
            }
            let escape = match escape_char.as_deref() {
                None => None,
                Some(Expr::Value(v)) => match &v.value {
                    ast::Value::SingleQuotedString(s) if s.chars().count() == 1 => s.chars().next(),
                    _ => return Err(ExprError::invalid(v.span, "ESCAPE takes one character")),
                },
                Some(other) => {
                    return Err(ExprError::invalid(
                        other.span(),
                        "ESCAPE takes one character",
                    ));
                }
            };
            typed(
                Node::Like(arg, pattern, escape, *negated),
                Type::Boolean,
                span,
            )
        }
        Expr::Case {
            operand,
            conditions,
            else_result,
            ..
        } => case(
            operand.as_deref(),
            conditions,
            else_result.as_deref(),
            scope,
            span,
        )?,
        Expr::Cast {
            kind: CastKind::Cast,
            expr: inner,
            data_type,
            format: None,
        } => {
            let name = data_type.to_string().to_uppercase();
            let ty = match Type::of_sql(&name) {
                Some(Type::Any) | None => {
                    return Err(ExprError::unsupported(span, format!("CAST to {name}")));
                }
                Some(ty) => ty,
            };
            let arg = boxed(inner, scope)?;
            let allowed = !matches!(
                (arg.ty, ty),
                (Type::Boolean, Type::Timestamp)
                    | (Type::Timestamp, Type::Boolean)
                    | (Type::Float, Type::Timestamp)
                    | (Type::Timestamp, Type::Integer | Type::Float)
            );
            if !allowed {
                return Err(ExprError::invalid(
                    span,
                    format!("cannot cast {} to {ty}", arg.ty),
                ));
            }
            typed(Node::Cast(arg, ty), ty, span)
        }
        Expr::Trim {
            expr: inner,
            trim_where,
            trim_what,
            trim_characters,
        } => {
            if trim_characters.is_some() {
                return Err(ExprError::unsupported(
                    span,
                    "TRIM with a list of characters",
                ));
            }
            let (leading, trailing) = match trim_where {
                None | Some(TrimWhereField::Both) => (true, true),
                Some(TrimWhereField::Leading) => (true, false),
                Some(TrimWhereField::Trailing) => (false, true),
            };
            let mut args = vec![compile(inner, scope)?];
            if let Some(what) = trim_what {
                args.push(compile(what, scope)?);
            }
            for a in &args {
                if !a.ty.is_textual() {
                    return Err(mismatch("TRIM", a, "a STRING"));
                }
            }
            typed(
                Node::Call(Builtin::Trim(leading, trailing), args),
                Type::Text,
                span,
            )
        }
        Expr::Substring {
            expr: inner,
            substring_from,
            substring_for,
            ..
        } => {
            let mut args = vec![compile(inner, scope)?];
            if !args[0].ty.is_textual() {
                return Err(mismatch("SUBSTRING", &args[0], "a STRING"));
            }
            let from = match substring_from {
                Some(from) => compile(from, scope)?,
                None => typed(Node::Literal(Value::Int(1)), Type::Integer, span),
            };
            args.push(from);
            if let Some(len) = substring_for {
                args.push(compile(len, scope)?);
            }
            for a in &args[1..] {
                if !matches!(a.ty, Type::Integer | Type::Any) {
                    return Err(mismatch("SUBSTRING", a, "an integer position and length"));
                }
            }
            typed(Node::Call(Builtin::Substring, args), Type::Text, span)
        }
        Expr::Function(function) => call(function, scope, span)?,
        other => {
            return Err(ExprError::unsupported(
                span,
                format!("the expression `{other}`"),
            ));
        }
    })
}

fn literal(value: &ast::Value, span: Span) -> Result<Typed, ExprError> {
    let (value, ty) = match value {
        ast::Value::Number(n, _) => match n.parse::<i64>() {
            Ok(i) => (Value::Int(i), Type::Integer),
            Err(_) => match n.parse::<f64>() {
                Ok(x) => (Value::Float(x), Type::Float),
                Err(_) => {
                    return Err(ExprError::invalid(
                        span,
                        format!("the number `{n}` is out of range"),
                    ));
                }
            },
        },
        ast::Value::SingleQuotedString(s) | ast::Value::DoubleQuotedString(s) => {
            (Value::Text(s.clone()), Type::Text)
        }
        ast::Value::Boolean(b) => (Value::Bool(*b), Type::Boolean),
        ast::Value::Null => (Value::Null, Type::Any),
        other => {
            return Err(ExprError::unsupported(
                span,
                format!("the literal `{other}`"),
            ));
        }
    };
    Ok(typed(Node::Literal(value), ty, span))
}

fn binary(
    op: &BinaryOperator,
    l: Box<Typed>,
    r: Box<Typed>,
    span: Span,
) -> Result<Typed, ExprError> {
    let arithmetic = |op: BinOp, symbol: &str| -> Result<Typed, ExprError> {
        for e in [&l, &r] {
            if !e.ty.is_numeric() {
                return Err(mismatch(&format!("`{symbol}`"), e, "numbers"));
            }
        }
        let ty = match (l.ty, r.ty) {
            (Type::Integer, Type::Integer) => Type::Integer,
            (Type::Any, _) | (_, Type::Any) => Type::Any,
            _ => Type::Float,
        };
        Ok(typed(Node::Binary(op, l.clone(), r.clone()), ty, span))
    };
    let comparison = |op: BinOp| -> Result<Typed, ExprError> {
        if !l.ty.comparable(r.ty) {
            return Err(ExprError::invalid(
                span,
                format!("cannot compare {} with {}", l.ty, r.ty),
            ));
        }
        Ok(typed(
            Node::Binary(op, l.clone(), r.clone()),
            Type::Boolean,
            span,
        ))
    };
    match op {
        BinaryOperator::Plus => arithmetic(BinOp::Add, "+"),
        BinaryOperator::Minus => arithmetic(BinOp::Sub, "-"),
        BinaryOperator::Multiply => arithmetic(BinOp::Mul, "*"),
        BinaryOperator::Divide => arithmetic(BinOp::Div, "/"),
        BinaryOperator::Modulo => arithmetic(BinOp::Mod, "%"),
        BinaryOperator::Eq => comparison(BinOp::Eq),
        BinaryOperator::NotEq => comparison(BinOp::NotEq),
        BinaryOperator::Lt => comparison(BinOp::Lt),
        BinaryOperator::LtEq => comparison(BinOp::LtEq),
        BinaryOperator::Gt => comparison(BinOp::Gt),
        BinaryOperator::GtEq => comparison(BinOp::GtEq),
        BinaryOperator::StringConcat => {
            Ok(typed(Node::Binary(BinOp::Concat, l, r), Type::Text, span))
        }
        BinaryOperator::And | BinaryOperator::Or => {
            let word = if *op == BinaryOperator::And {
                "AND"
            } else {
                "OR"
            };
            for e in [&l, &r] {
                if !e.ty.is_boolean() {
                    return Err(mismatch(word, e, "a BOOLEAN"));
                }
            }
            let node = if *op == BinaryOperator::And {
                Node::And(l, r)
            } else {
                Node::Or(l, r)
            };
            Ok(typed(node, Type::Boolean, span))
        }
        other => Err(ExprError::unsupported(
            span,
            format!("the operator `{other}`"),
        )),
    }
}

fn case(
    operand: Option<&Expr>,
    conditions: &[ast::CaseWhen],
    else_result: Option<&Expr>,
    scope: &mut Scope,
    span: Span,
) -> Result<Typed, ExprError> {
    let operand = operand.map(|o| compile(o, scope)).transpose()?;
    let mut ty: Option<Type> = None;
    let unify = |e: &Typed, ty: &mut Option<Type>| -> Result<(), ExprError> {
        // A NULL literal takes the other branches' type.
        if matches!(e.node, Node::Literal(Value::Null)) {
            return Ok(());
        }
        *ty = Some(match *ty {
            None => e.ty,
            Some(t) => t.unify(e.ty).ok_or_else(|| {
                ExprError::invalid(
                    e.span,
                    format!("CASE branches must have one type: {t} and {}", e.ty),
                )
            })?,
        });
        Ok(())
    };
    let mut whens = Vec::with_capacity(conditions.len());
    for when in conditions {
        let condition = compile(&when.condition, scope)?;
        match &operand {
            Some(o) if !o.ty.comparable(condition.ty) => {
                return Err(ExprError::invalid(
                    condition.span,
                    format!("CASE: cannot compare {} with {}", o.ty, condition.ty),
                ));
            }
            None if !condition.ty.is_boolean() => {
                return Err(mismatch("WHEN", &condition, "a BOOLEAN"));
            }
            _ => {}
        }
        let result = compile(&when.result, scope)?;
        unify(&result, &mut ty)?;
        whens.push((condition, result));
    }
    let otherwise = else_result.map(|e| compile(e, scope)).transpose()?;
    if let Some(e) = &otherwise {
        unify(e, &mut ty)?;
    }
    Ok(typed(
        Node::Case {
            operand: operand.map(Box::new),
            whens,
            otherwise: otherwise.map(Box::new),
        },
        ty.unwrap_or(Type::Any),
        span,
    ))
}

fn call(function: &ast::Function, scope: &mut Scope, span: Span) -> Result<Typed, ExprError> {
    let name = function.name.to_string();
    if function.filter.is_some() || function.over.is_some() || !function.within_group.is_empty() {
        return Err(ExprError::unsupported(span, format!("`{function}`")));
    }
    let exprs: Vec<&Expr> = match &function.args {
        FunctionArguments::None => vec![],
        FunctionArguments::List(list) => {
            if list.duplicate_treatment.is_some() || !list.clauses.is_empty() {
                return Err(ExprError::unsupported(span, format!("`{function}`")));
            }
            list.args
                .iter()
                .map(|arg| match arg {
                    FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Ok(e),
                    other => Err(ExprError::unsupported(
                        span,
                        format!("the argument `{other}` of {name}"),
                    )),
                })
                .collect::<Result<_, _>>()?
        }
        FunctionArguments::Subquery(_) => {
            return Err(ExprError::unsupported(span, format!("`{function}`")));
        }
    };
    let upper = name.to_ascii_uppercase();
    let builtin = match upper.as_str() {
        "UPPER" => Some((Builtin::Upper, 1..=1)),
        "LOWER" => Some((Builtin::Lower, 1..=1)),
        "CONCAT" => Some((Builtin::Concat, 1..=usize::MAX)),
        "CHAR_LENGTH" | "CHARACTER_LENGTH" => Some((Builtin::CharLength, 1..=1)),
        "SUBSTRING" | "SUBSTR" => Some((Builtin::Substring, 2..=3)),
        "COALESCE" => Some((Builtin::Coalesce, 1..=usize::MAX)),
        "ABS" => Some((Builtin::Abs, 1..=1)),
        _ => None,
    };
    if let Some((builtin, arity)) = builtin {
        if !arity.contains(&exprs.len()) {
            let wanted = match (arity.start(), arity.end()) {
                (a, b) if a == b => format!("{a} argument{}", if *a == 1 { "" } else { "s" }),
                (a, &usize::MAX) => {
                    format!("at least {a} argument{}", if *a == 1 { "" } else { "s" })
                }
                (a, b) => format!("{a} to {b} arguments"),
            };
            return Err(ExprError::invalid(
                span,
                format!("{upper} takes {wanted}, not {}", exprs.len()),
            ));
        }
        let args = exprs
            .iter()
            .map(|e| compile(e, scope))
            .collect::<Result<Vec<_>, _>>()?;
        let ty = match builtin {
            Builtin::Upper | Builtin::Lower | Builtin::CharLength => {
                if !args[0].ty.is_textual() {
                    return Err(mismatch(&upper, &args[0], "a STRING"));
                }
                if builtin == Builtin::CharLength {
                    Type::Integer
                } else {
                    Type::Text
                }
            }
            Builtin::Concat | Builtin::Trim(..) => Type::Text,
            Builtin::Substring => {
                if !args[0].ty.is_textual() {
                    return Err(mismatch(&upper, &args[0], "a STRING"));
                }
                for a in &args[1..] {
                    if !matches!(a.ty, Type::Integer | Type::Any) {
                        return Err(mismatch(&upper, a, "an integer position and length"));
                    }
                }
                Type::Text
            }
            Builtin::Coalesce => {
                let mut ty: Option<Type> = None;
                for a in &args {
                    if matches!(a.node, Node::Literal(Value::Null)) {
                        continue;
                    }
                    ty = Some(match ty {
                        None => a.ty,
                        Some(t) => t.unify(a.ty).ok_or_else(|| {
                            ExprError::invalid(
                                a.span,
                                format!(
                                    "COALESCE's arguments must have one type: {t} and {}",
                                    a.ty
                                ),
                            )
                        })?,
                    });
                }
                ty.unwrap_or(Type::Any)
            }
            Builtin::Abs => {
                if !args[0].ty.is_numeric() {
                    return Err(mismatch("ABS", &args[0], "a number"));
                }
                args[0].ty
            }
        };
        return Ok(typed(Node::Call(builtin, args), ty, span));
    }
    if let Some(slot) = scope.udf(&name) {
        let args = exprs
            .iter()
            .map(|e| compile(e, scope))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(typed(Node::Udf(slot, args), Type::Any, span));
    }
    if matches!(upper.as_str(), "COUNT" | "SUM" | "MIN" | "MAX" | "AVG") {
        return Err(ExprError::invalid(
            span,
            format!("the aggregate {upper} needs a window (GROUP BY window_start, window_end)"),
        ));
    }
    Err(ExprError::invalid(
        span,
        format!(
            "unknown function `{name}` (built in: UPPER, LOWER, CONCAT, TRIM, CHAR_LENGTH, SUBSTRING, COALESCE, ABS; or CREATE FUNCTION {name} AS 'udf.wasm' LANGUAGE WASM)"
        ),
    ))
}
