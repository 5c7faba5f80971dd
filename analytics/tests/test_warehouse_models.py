from conftest import query


def test_build(built):
    print(built["dbt_output"][-3000:])
    for table in ["recovery_performance", "repair_step_effectiveness", "llm_cost_per_recovery", "llm_cost_by_agent", "cron_jobs", "guardrail_checks", "event_delivery_hourly"]:
        print(table)
        for row in query(built["dsn"], "select * from analytics.%s order by 1, 2, 3" % table):
            print("  ", row)
