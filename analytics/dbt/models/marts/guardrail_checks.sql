-- Prompt-similarity checks by threshold and the action taken.
select
  threshold,
  action_taken,
  count(*) as checks,
  sum(case when above_threshold then 1 else 0 end) as above_threshold,
  avg(score) as mean_score,
  max(score) as max_score
from {{ ref('stg_similarity_checks') }}
group by threshold, action_taken
