-- Regression on diabetes through pgmlcat, with psql:
--   psql "host=127.0.0.1 port=6432 user=app dbname=app" -f examples/diabetes_regression.sql
\set ON_ERROR_STOP on

SELECT * FROM pgml.load_dataset('diabetes');

-- Several algorithms; automatic_deploy keeps whichever has the best r2.
SELECT * FROM pgml.train('diabetes', 'regression', 'pgml.diabetes', 'target', algorithm => 'linear');
SELECT * FROM pgml.train('diabetes', algorithm => 'ridge', hyperparams => '{"alpha": 0.01}');
SELECT * FROM pgml.train('diabetes', algorithm => 'lightgbm',
    search => 'random', search_params => '{"learning_rate": [0.03, 0.1], "num_leaves": [4, 8, 16]}',
    search_args => '{"n_iter": 4, "cv": 3}');

SELECT id, algorithm, round((metrics->>'r2')::numeric, 3) AS r2,
       round((metrics->>'mean_absolute_error')::numeric, 1) AS mae
FROM pgml.models m JOIN pgml.projects p ON p.id = m.project_id
WHERE p.name = 'diabetes' ORDER BY id;

SELECT * FROM pgml.deploy('diabetes', 'best_score');

-- The ten patients with the highest predicted progression: the ORDER BY and
-- LIMIT on the prediction are evaluated by pgmlcat on the streamed rows.
SELECT age, bmi, bp, target,
       pgml.predict('diabetes', ARRAY[age, sex, bmi, bp, s1, s2, s3, s4, s5, s6]) AS predicted
FROM pgml.diabetes
ORDER BY predicted DESC
LIMIT 10;

-- Roll back to the previously deployed model if the new one disappoints.
SELECT * FROM pgml.deploy('diabetes', 'rollback');
