"""Studies: named variants of a reference experiment, each run over several seeds.

- `spec`: the study file (`studies/<name>.toml`) parsed and checked: variants, seeds, groups.
- `run`: the local executor: processes claim the missing runs from the results store and train them.
- `executors`: the unit of work (`train_one` -> `RunResult`) and the Ray executor; only the study
  driver writes the store.
- `adopt`: runs made elsewhere recorded as the study runs they equal.
- `status`: done / running / pending / failed and the time left.
"""

from cifarlab.study.adopt import adopt_database, adopt_run
from cifarlab.study.run import DataCache, plan_runs, run_dir_for, run_study
from cifarlab.study.spec import Study, Variant, find_study, load_study
from cifarlab.study.status import status_table

__all__ = ["DataCache", "Study", "Variant", "adopt_database", "adopt_run", "find_study", "load_study", "plan_runs", "run_dir_for",
           "run_study", "status_table"]
