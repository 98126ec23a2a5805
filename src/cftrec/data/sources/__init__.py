"""One reader module per input format; each has `read(input_path, ReadOptions) -> SourceData`."""
