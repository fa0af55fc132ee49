// pgJDBC logs in (SCRAM-SHA-256: its own SCRAM client) and runs a server-
// prepared statement with a bound parameter and a SET/SHOW of a parameter
// of pgmlcat's. Prints what it saw, then `backends: <n>`.
//
// Usage: java ScramLogin JDBC_URL USER PASSWORD
import java.sql.*;
import java.util.*;

public class ScramLogin {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.setProperty("user", args[1]);
        props.setProperty("password", args[2]);
        props.setProperty("prepareThreshold", "1");
        Set<Integer> pids = new HashSet<>();
        try (Connection c = DriverManager.getConnection(args[0], props)) {
            try (Statement s = c.createStatement(); ResultSet r = s.executeQuery("select current_user::text, pg_backend_pid()")) {
                r.next();
                System.out.println("user " + r.getString(1));
                pids.add(r.getInt(2));
            }
            try (PreparedStatement p = c.prepareStatement("select ?::int + 1, pg_backend_pid()")) {
                for (int i = 0; i < 3; i++) {
                    p.setInt(1, i);
                    try (ResultSet r = p.executeQuery()) {
                        r.next();
                        System.out.println("plus one " + r.getInt(1));
                        pids.add(r.getInt(2));
                    }
                }
            }
            try (Statement s = c.createStatement()) {
                s.execute("set pgmlcat.max_lag_ms = 50");
                try (ResultSet r = s.executeQuery("show pgmlcat.max_lag_ms")) {
                    r.next();
                    System.out.println("max_lag_ms " + r.getString(1));
                }
            }
        }
        System.out.println("backends: " + pids.size());
    }
}
