import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.Properties;

/**
 * pgml.predict with parameters as pgJDBC sends them: declared types
 * (float8 for setDouble, int4 for setInt), server-prepared from the first
 * execution (prepareThreshold=1), where pgJDBC switches results, and then
 * parameters, to binary. Each query runs 8 times with parameters and once
 * with the same values as constants; prints "params ..." and "consts ..."
 * lines, then "backends: 1" (the harness wants the line).
 *
 * Usage: java -cp postgresql.jar:DIR PredictParams JDBC_URL
 */
public class PredictParams {
    static String one(ResultSet rs) throws SQLException {
        rs.next();
        return rs.getString(1);
    }

    public static void main(String[] args) throws Exception {
        Properties p = new Properties();
        p.setProperty("user", "app");
        p.setProperty("password", "app_pw");
        p.setProperty("prepareThreshold", "1");
        try (Connection c = DriverManager.getConnection(args[0], p);
             Statement s = c.createStatement()) {
            String[][] queries = {
                {"SELECT pgml.predict('species', ARRAY[?, ?, ?, ?]::real[])",
                 "SELECT pgml.predict('species', ARRAY[5.1, 3.5, 1.4, 0.2]::real[])"},
                {"SELECT pgml.predict('width', ARRAY[?, ?, ?])",
                 "SELECT pgml.predict('width', ARRAY[5.1::float8, 3.5::float8, 1.4::float8])"},
                {"SELECT pgml.predict('width', ARRAY[?::int, ?, ?]::real[])",
                 "SELECT pgml.predict('width', ARRAY[5, 3.5, 1.4]::real[])"},
                // The general method: a threshold on a prediction in WHERE.
                {"SELECT count(*) FROM pgml.iris WHERE pgml.predict('width', "
                     + "ARRAY[sepal_length, sepal_width, petal_length]) > ? AND sepal_width > ?",
                 "SELECT count(*) FROM pgml.iris WHERE pgml.predict('width', "
                     + "ARRAY[sepal_length, sepal_width, petal_length]) > 1.5 AND sepal_width > 3.5"},
            };
            for (int q = 0; q < queries.length; q++) {
                try (PreparedStatement ps = c.prepareStatement(queries[q][0])) {
                    for (int i = 0; i < 8; i++) {
                        if (q == 3) {
                            ps.setDouble(1, 1.5);
                            ps.setDouble(2, 3.5);
                        } else {
                            if (q == 2) {
                                ps.setInt(1, 5);
                            } else {
                                ps.setDouble(1, 5.1);
                            }
                            ps.setDouble(2, 3.5);
                            ps.setDouble(3, 1.4);
                        }
                        if (q == 0) {
                            ps.setDouble(4, 0.2);
                        }
                        try (ResultSet rs = ps.executeQuery()) {
                            System.out.println("params " + q + ": " + one(rs));
                        }
                    }
                }
                try (ResultSet rs = s.executeQuery(queries[q][1])) {
                    System.out.println("consts " + q + ": " + one(rs));
                }
            }
        }
        System.out.println("backends: 1");
    }
}
