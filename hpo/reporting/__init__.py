"""What a search shows: the plan printed before it, progress bars, the summary table, Optuna's plots."""
from hpo.reporting._plan import format_plan, format_where_to_look
from hpo.reporting._plots import PLOTS_FOLDER, write_plots
from hpo.reporting._progress import TrialsBar
from hpo.reporting._summary import (FINAL_TEST_ATTR, TABLE_HEADER, LearnerSummary, csv_table, markdown_table,
                                    summarize)

__all__ = ["FINAL_TEST_ATTR", "LearnerSummary", "PLOTS_FOLDER", "TABLE_HEADER", "TrialsBar", "csv_table", "format_plan", "format_where_to_look",
           "markdown_table", "summarize", "write_plots"]
