"""What a search shows: the plan printed before it, progress bars, the summary table, the paired comparison of the
learners, the protocol card of each final test, the accuracy-against-compute frontier, Optuna's plots."""
from hpo.reporting._comparison import (Comparison, PairComparison, EpisodeScores, compare, comparison_csv,
                                       comparison_markdown, holm)
from hpo.reporting._frontier import (FRONTIER_HEADER, REACH_FRACTIONS, TIMING_ATTR, FrontierPoint, LearnerFrontier,
                                     compute_to_reach, frontier_csv, frontier_table, learner_frontiers,
                                     write_frontier_plot)
from hpo.reporting._plan import format_plan, format_where_to_look
from hpo.reporting._plots import PLOTS_FOLDER, write_plots
from hpo.reporting._progress import TrialsBar
from hpo.reporting._protocol import PROTOCOL_FILE, format_protocol, protocol_card
from hpo.reporting._summary import (FINAL_TEST_ATTR, SEED_RUNS_ATTR, TABLE_HEADER, TEST_EPISODES_ATTR, LearnerSummary,
                                    csv_table, markdown_table, seed_results, summarize, episode_scores)

__all__ = ["Comparison", "FINAL_TEST_ATTR", "FRONTIER_HEADER", "FrontierPoint", "LearnerFrontier", "LearnerSummary",
           "PLOTS_FOLDER", "PROTOCOL_FILE", "PairComparison", "REACH_FRACTIONS", "SEED_RUNS_ATTR", "TABLE_HEADER",
           "TEST_EPISODES_ATTR", "TIMING_ATTR", "EpisodeScores", "TrialsBar", "compare", "comparison_csv",
           "comparison_markdown", "compute_to_reach", "csv_table", "format_plan", "format_protocol",
           "format_where_to_look", "frontier_csv", "frontier_table", "holm", "learner_frontiers", "markdown_table",
           "protocol_card", "seed_results", "summarize", "episode_scores", "write_frontier_plot", "write_plots"]
