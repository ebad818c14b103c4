"""The database: schema, write operations, the single writer, the read side, the writer's lock."""
