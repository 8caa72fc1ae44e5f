"""The experiment grid, without torch (building the DAG stays fast): one module per job of the grid.

vocabulary   the protocol's names and the cells they make (`Setting`, cell ids, `ConfigError`)
conf         reading a config, with the schema's defaults (`config.schema.yaml` beside it)
validate     loading and checking a config before any job
layout       every artifact path and id
plan         what a config expands to (cells, retraining groups, evaluations, tables, figures, jobs) and
             what each artifact is made from
rebuild      the table rule's rebuild markers (a missing part reruns its table)
"""
