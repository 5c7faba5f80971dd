{{ rudder_event('prompt_similarity_logged', {
  'agent_id': 'string', 'threshold': 'float', 'score': 'float', 'above_threshold': 'boolean',
  'action_taken': 'string'}) }}
