"""Reports are built from results files only (results.jsonl, manifest.jsonl, diagnostics.jsonl), never from
training or model code: tables with confidence intervals, matplotlib charts, image grids, regression history."""
