{{ rudder_event('llm_cost_logged', {
  'agent_id': 'string', 'trace_id': 'string', 'provider': 'string', 'model': 'string',
  'input_tokens': 'int', 'output_tokens': 'int', 'cost_usd': 'numeric'}) }}
