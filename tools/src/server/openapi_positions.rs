//! The OpenAPI side of reading one's writes (`server/positions.rs`): the
//! `min_position` parameter of every `GET /v1/…` and the
//! `Opledger-Position` header of every successful `POST /v1/…`. Added to
//! each operation here, once, since the middleware serves them all.

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{OpenApi as Document, RefOr, Required};
use utoipa::Modify;

use crate::server::positions::{MIN_POSITION_PARAMETER, POSITION_HEADER};

pub struct Positions;

fn position_schema() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::Int64)))
        .minimum(Some(0))
}

impl Modify for Positions {
    fn modify(&self, openapi: &mut Document) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !path.starts_with("/v1/") {
                continue;
            }
            if let Some(get) = item.get.as_mut() {
                add_min_position(get);
            }
            if let Some(post) = item.post.as_mut() {
                add_position_header(post);
            }
        }
    }
}

fn add_min_position(operation: &mut Operation) {
    let parameter = ParameterBuilder::new()
        .name(MIN_POSITION_PARAMETER)
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(
            "Answer only once this node's read models have applied this position (an `Opledger-Position` a write \
             answered with, on any node); at most a few seconds, else `503 projection_unavailable`. A position \
             past the log's head is `400 invalid_request`.",
        ))
        .schema(Some(position_schema()))
        .build();
    operation.parameters.get_or_insert_with(Vec::new).push(parameter);
}

fn add_position_header(operation: &mut Operation) {
    for (status, response) in operation.responses.responses.iter_mut() {
        let RefOr::T(response) = response else { continue };
        if !status.starts_with('2') {
            continue;
        }
        let header = HeaderBuilder::new()
            .schema(position_schema())
            .description(Some(
                "A position at or past this write's last event: pass it as `min_position` to read the write on any node.",
            ))
            .build();
        response.headers.insert(POSITION_HEADER.as_str().to_owned(), header);
    }
}
