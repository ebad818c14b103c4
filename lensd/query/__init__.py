"""The query language: expression nodes, aggregator state, the text grammar, the SQL compiler."""
